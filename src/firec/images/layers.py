"""Apply image layers (tar streams) to a staging directory, safely and without root.

A :class:`StagingTree` is a directory on the host that becomes the root of the
image. Layers are applied in order with the OCI rules: whiteouts (``.wh.NAME``)
delete what lower layers put at ``NAME``, an opaque whiteout (``.wh..wh..opq``)
empties its directory, and an entry replaces what was there before.

Nothing is ever written outside the staging directory:

* entry names that are absolute or contain ``..`` are refused;
* a parent directory that is a symlink is followed *inside the image* (an
  absolute target means the image's root), and refused when it climbs out;
* a hard link must name a file already in the image.

What the host cannot hold for an unprivileged user (owners other than one's
own, device nodes, modes that would lock the user out of their own staging
files) is recorded in :attr:`StagingTree.wanted` and applied to the finished
ext4 image afterwards with debugfs (see :mod:`firec.images.rootfs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from firec.errors import FirecError

__all__ = ["LayerOpener", "StagingTree", "Wanted", "clean_name"]

#: Opens a layer's (decompressed) tar stream, as a context manager.
LayerOpener = Callable[[], AbstractContextManager[IO[bytes]]]

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_MAX_SYMLINK_HOPS = 40
_COPY_CHUNK = 1 << 20


@dataclass
class Wanted:
    """What one path must look like in the image.

    Attributes:
        mode: the full ``st_mode``, file type bits included.
        uid: owner user id.
        gid: owner group id.
        mtime: modification time, seconds since the epoch.
        device: ``(major, minor)`` for a character or block device, else ``None``.
        xattrs: extended attributes (``security.capability``...) from the layer.
    """

    mode: int
    uid: int
    gid: int
    mtime: int = 0
    device: tuple[int, int] | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)


def clean_name(name: str, *, where: str) -> str:
    """A tar member name as a relative POSIX path ("" for the root); refuse escapes.

    >>> clean_name("./etc//passwd", where="layer 1")
    'etc/passwd'
    >>> clean_name("../etc/passwd", where="layer 1")
    Traceback (most recent call last):
    ...
    firec.errors.FirecError: layer 1: refusing entry '../etc/passwd': '..' would leave the image
    """
    if name.startswith("/"):
        raise FirecError(f"{where}: refusing entry {name!r}: absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FirecError(f"{where}: refusing entry {name!r}: '..' would leave the image")
    if "\x00" in name:
        raise FirecError(f"{where}: refusing entry {name!r}: NUL in the name")
    return "/".join(parts)


class StagingTree:
    """A directory being filled with image layers.

    Args:
        root: an empty directory that becomes the image's root.

    Example::

        >>> import contextlib, io, tarfile, tempfile
        >>> buf = io.BytesIO()
        >>> with tarfile.open(fileobj=buf, mode="w") as tar:
        ...     info = tarfile.TarInfo("etc/hostname")
        ...     info.size = 3
        ...     tar.addfile(info, io.BytesIO(b"vm\\n"))
        >>> tree = StagingTree(Path(tempfile.mkdtemp()))
        >>> tree.apply_layer(lambda: contextlib.nullcontext(io.BytesIO(buf.getvalue())), "layer 1")
        >>> (tree.root / "etc/hostname").read_bytes()
        b'vm\\n'
        >>> tree.wanted["etc/hostname"].mode == 0o100644
        True
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Relative path -> what it must be in the image ("" is the root directory).
        self.wanted: dict[str, Wanted] = {"": Wanted(stat.S_IFDIR | 0o755, 0, 0)}
        self._uid = os.geteuid()
        self._gid = os.getegid()

    # -- layers -----------------------------------------------------------------

    def apply_layer(self, open_stream: LayerOpener, where: str) -> None:
        """Apply one layer: ``open_stream()`` gives a context manager over its tar stream.

        The layer is read twice. The first reading checks every name and applies
        the whiteouts, which only ever concern lower layers; the second extracts
        the entries. ``where`` names the layer in error messages.
        """
        with open_stream() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                rel = clean_name(member.name, where=where)
                if member.islnk():
                    clean_name(member.linkname, where=f"{where}: hard link {member.name!r}")
                base = PurePosixPath(rel).name
                if base.startswith(WHITEOUT_PREFIX):
                    self._whiteout(rel, where)
        with open_stream() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                rel = clean_name(member.name, where=where)
                if PurePosixPath(rel).name.startswith(WHITEOUT_PREFIX):
                    continue
                self._extract(member, rel, tar, where)

    def _whiteout(self, rel: str, where: str) -> None:
        parent_rel, _, base = rel.rpartition("/")
        parent = self._resolve_dir(parent_rel, where=where, entry=rel, create=False)
        if parent is None:
            return
        if base == OPAQUE_WHITEOUT:
            with os.scandir(parent) as it:
                for child in list(it):
                    _remove(Path(child.path))
        elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):  # .wh..wh.* is metadata
            _remove(parent / base[len(WHITEOUT_PREFIX) :])

    # -- entries ------------------------------------------------------------------

    def _extract(self, member: tarfile.TarInfo, rel: str, tar: tarfile.TarFile, where: str) -> None:
        wanted = Wanted(
            _type_bits(member) | (member.mode & 0o7777),
            member.uid,
            member.gid,
            int(member.mtime),
            xattrs=_xattrs(member),
        )
        if rel == "":
            if member.isdir():
                self.wanted[""] = wanted
            return
        parent_rel, _, base = rel.rpartition("/")
        parent = self._resolve_dir(parent_rel, where=where, entry=rel, create=True)
        assert parent is not None
        path = parent / base
        key = path.relative_to(self.root).as_posix()
        existing = _lstat(path)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    _remove(path)
                path.mkdir(mode=0o700)
        elif member.isfile():
            if existing is not None:
                _remove(path)
            src = tar.extractfile(member)
            assert src is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
        elif member.issym():
            if existing is not None:
                _remove(path)
            os.symlink(member.linkname, path)
        elif member.islnk():
            target_rel = clean_name(member.linkname, where=f"{where}: hard link {member.name!r}")
            target = self._existing(target_rel, where=where, entry=rel)
            if target is None or stat.S_ISDIR(target.lstat().st_mode):
                raise FirecError(
                    f"{where}: refusing hard link {member.name!r} -> {member.linkname!r}: "
                    "its target is not a file in the image"
                )
            if existing is not None:
                if os.path.samestat(existing, target.lstat()):
                    return
                _remove(path)
            os.link(target, path, follow_symlinks=False)
            self.wanted[key] = self.wanted.get(
                target.relative_to(self.root).as_posix(), _wanted_from(target.lstat())
            )
            return
        elif member.ischr() or member.isblk():
            if existing is not None:
                _remove(path)
            # A placeholder here; the node itself is made in the image (no root needed).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            wanted.device = (member.devmajor, member.devminor)
        elif member.isfifo():
            if existing is not None:
                _remove(path)
            os.mkfifo(path, 0o600)
        else:
            raise FirecError(
                f"{where}: entry {member.name!r} has an unsupported tar type {member.type!r}"
            )
        self.wanted[key] = wanted
        self._settle(path, wanted)

    def _settle(self, path: Path, wanted: Wanted) -> None:
        """Give the host file what it can hold of ``wanted``; the image gets the rest."""
        is_link = stat.S_ISLNK(wanted.mode)
        if (wanted.uid, wanted.gid) != (self._uid, self._gid):
            with contextlib.suppress(PermissionError):
                os.lchown(path, wanted.uid, wanted.gid)
        if not is_link:
            # Keep the staging copy readable (and dirs enterable) by ourselves.
            floor = 0o700 if stat.S_ISDIR(wanted.mode) else 0o600
            with contextlib.suppress(PermissionError):
                os.chmod(path, (wanted.mode & 0o7777) | floor)
        if not stat.S_ISDIR(wanted.mode):
            os.utime(path, (wanted.mtime, wanted.mtime), follow_symlinks=False)

    def finish(self) -> None:
        """Set directory times (adding entries changed them), deepest first."""
        for key in sorted(self.wanted, key=lambda k: k.count("/"), reverse=True):
            wanted = self.wanted[key]
            if stat.S_ISDIR(wanted.mode):
                path = self.root / key if key else self.root
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path, (wanted.mtime, wanted.mtime), follow_symlinks=False)

    # -- path resolution inside the image ------------------------------------------

    def _resolve_dir(self, rel: str, *, where: str, entry: str, create: bool) -> Path | None:
        """The host directory for the image directory ``rel``, following symlinks in scope.

        Missing directories are made when ``create`` (else None is returned). A
        symlink that would lead outside the image is refused.
        """
        parts: deque[str] = deque(p for p in rel.split("/") if p)
        done: list[str] = []
        hops = 0
        via = ""
        while parts:
            part = parts.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise FirecError(
                        f"{where}: refusing entry {entry!r}: it goes through the symlink "
                        f"{via}, which points outside the image"
                    )
                done.pop()
                continue
            path = self.root.joinpath(*done, part)
            st = _lstat(path)
            if st is None:
                if not create:
                    return None
                path.mkdir(mode=0o755)
                key = "/".join([*done, part])
                self.wanted[key] = Wanted(stat.S_IFDIR | 0o755, 0, 0)
                self._settle(path, self.wanted[key])
                done.append(part)
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                target = os.readlink(path)
                via = f"'{'/'.join([*done, part])}' -> '{target}'"
                if hops > _MAX_SYMLINK_HOPS:
                    raise FirecError(
                        f"{where}: refusing entry {entry!r}: too many symlinks ({via})"
                    )
                if target.startswith("/"):
                    done = []
                parts.extendleft(reversed([p for p in target.split("/") if p]))
            elif stat.S_ISDIR(st.st_mode):
                done.append(part)
            else:
                blocker = "/".join([*done, part])
                raise FirecError(
                    f"{where}: refusing entry {entry!r}: '{blocker}' is not a directory"
                )
        return self.root.joinpath(*done)

    def _existing(self, rel: str, *, where: str, entry: str) -> Path | None:
        parent_rel, _, base = rel.rpartition("/")
        parent = self._resolve_dir(parent_rel, where=where, entry=entry, create=False)
        if parent is None or not base:
            return None
        path = parent / base
        return path if _lstat(path) is not None else None


def _type_bits(member: tarfile.TarInfo) -> int:
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    if member.isfifo():
        return stat.S_IFIFO
    return stat.S_IFREG


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """Extended attributes recorded in PAX headers (GNU tar, Docker, BuildKit)."""
    prefix = "SCHILY.xattr."
    return {
        key[len(prefix) :]: value.encode("utf-8", "surrogateescape")
        for key, value in member.pax_headers.items()
        if key.startswith(prefix)
    }


def _wanted_from(st: os.stat_result) -> Wanted:
    return Wanted(st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        raise


def _remove(path: Path) -> None:
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
