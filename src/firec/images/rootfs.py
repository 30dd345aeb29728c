"""Build ext4 root filesystem images, without root and without mounting anything.

:func:`build_rootfs` takes a directory, an OCI image layout (tarball or
directory) or a ``docker save`` tarball and writes an ext4 image file:

1. image layers are applied to a staging directory next to ``dest`` (see
   :mod:`firec.images.layers` for the safety rules);
2. ``mkfs.ext4 -d`` (e2fsprogs) copies that tree into a new filesystem;
3. ``debugfs -w`` then sets what an unprivileged user cannot put on the host
   copy: other users' ownership, exact modes, and device nodes;
4. firec's own files go in (:mod:`firec.images.agent`): the image's defaults
   for running commands (entrypoint, cmd, env, working dir, user; see
   :mod:`firec.images.defaults`) at ``/.firec/image.json``, and the guest
   agent, if given, at ``/.firec/firec-agent``. The same record is written
   beside the image as ``<dest>.json``.

The image is sized automatically from its content, or to an explicit size that
is refused when too small. It appears at ``dest`` only when complete.

Example::

    >>> from firec.images import build_rootfs
    >>> build_rootfs("alpine-minirootfs/", "rootfs.ext4")  # doctest: +SKIP
    PosixPath('rootfs.ext4')
    >>> build_rootfs("alpine.tar", "rootfs.ext4", size="256M", label="root")  # doctest: +SKIP
    PosixPath('rootfs.ext4')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firec.errors import FirecError, ValidationError
from firec.images import e2fs
from firec.images.agent import check_agent, extra_size, has_systemd, install_firec_files
from firec.images.defaults import AGENT_PATH, ImageDefaults, sidecar_path
from firec.images.layers import StagingTree, Wanted
from firec.images.oci import is_oci_layout_dir, unpack_image_with_config

__all__ = ["build_rootfs", "parse_size"]

_BLOCK = 4096
_INODE_SIZE = 256
_MIB = 1 << 20
_GROUP_BLOCKS = 32768
_LABEL_MAX = 16

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(size: int | str) -> int:
    """A size in bytes from an int or a string with a binary unit.

    >>> parse_size("512M"), parse_size("2GiB"), parse_size(4096)
    (536870912, 2147483648, 4096)
    """
    if isinstance(size, bool):
        raise ValidationError("size", f"expected bytes or a string like '512M', got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(size)
        if match is None:
            raise ValidationError(
                "size", f"cannot read {size!r}: use bytes or a number with K, M, G or T (binary)"
            )
        value = int(match[1]) * _UNITS[match[2].lower()]
    if value <= 0:
        raise ValidationError("size", f"must be positive, got {size!r}")
    return value


@dataclass(frozen=True)
class _Content:
    blocks: int  # 4 KiB data blocks the files, directories and long symlinks need
    inodes: int  # inodes they use


def build_rootfs(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    size: int | str | None = None,
    label: str | None = None,
    agent: str | os.PathLike[str] | None = None,
    agent_as_init: bool = True,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] | None = None,
    working_dir: str | None = None,
    user: str | None = None,
) -> Path:
    """Make an ext4 image at ``dest`` holding ``source``, and firec's record of it.

    Args:
        source: a directory (its content becomes the image's root, owners and
            modes kept), an OCI image layout (tar archive or directory), or a
            ``docker save`` tarball (its layers are applied in order).
        dest: the image file to write (replaced if it exists).
        size: the image size, in bytes or as a string like ``"512M"`` (rounded
            up to 4 KiB). By default it is computed from the content, with room
            for metadata and some free space.
        label: the filesystem label (at most 16 bytes).
        agent: the guest agent binary (``firec-agent``) to install at
            ``/.firec/firec-agent``; ``None``: no agent.
        agent_as_init: the agent is the image's PID 1 (``firec run`` boots it
            with ``init=/.firec/firec-agent``); ``False``: a systemd service,
            for an image whose own init is systemd (refused otherwise).
        entrypoint: replaces the image's entrypoint (a directory has none).
        cmd: replaces the image's cmd.
        env: replaces the image's environment (``KEY=VALUE`` strings).
        working_dir: replaces the image's working directory.
        user: replaces the image's user.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`. Its record (entrypoint, cmd, env,
        working dir, user, agent; :func:`firec.images.read_image_defaults`) is
        at ``/.firec/image.json`` inside it and at ``<dest>.json`` beside it.

    Raises:
        ValidationError: ``size`` is too small for the content (``field`` is
            ``"size"``), ``label`` is too long, ``agent`` is not an executable,
            or the agent is to be a service in an image without systemd.
        FirecError: e2fsprogs is missing, the source is unreadable or not an
            image, or a layer tries to write outside the image; nothing is left
            behind at ``dest``.

    Example::

        >>> import pathlib, subprocess, tempfile
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> (work / "root/etc").mkdir(parents=True)
        >>> _ = (work / "root/etc/hostname").write_text("vm\\n")
        >>> image = build_rootfs(work / "root", work / "rootfs.ext4", label="root")
        >>> subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode
        0
    """
    src = Path(source)
    out = Path(dest)
    if label is not None and len(label.encode()) > _LABEL_MAX:
        raise ValidationError("label", f"{label!r} is longer than {_LABEL_MAX} bytes")
    wanted_size = None if size is None else -(-parse_size(size) // _BLOCK) * _BLOCK
    agent_path = check_agent(agent) if agent is not None else None
    options = {
        "entrypoint": entrypoint,
        "cmd": cmd,
        "env": env,
        "working_dir": working_dir,
        "user": user,
    }
    for name, value in options.items():
        if isinstance(value, str) and name in ("entrypoint", "cmd", "env"):
            raise ValidationError(name, f"give a list of strings, not the string {value!r}")
    plan = _Plan(agent_path, agent_as_init, options)
    mkfs = e2fs.require_tool("mkfs.ext4", "build ext4 images")
    e2fs.require_tool("debugfs", "build ext4 images")
    if not src.exists():
        raise FirecError(f"{src}: no such file or directory")
    if out.is_dir():
        raise FirecError(f"{out}: is a directory; give the image file's path")

    parent = out.parent if str(out.parent) else Path(".")
    try:
        _build(src, out, parent, mkfs, wanted_size, label, plan)
    except OSError as exc:  # the host's side: disk full, permissions, a missing directory
        where = f" ({exc.filename})" if exc.filename else ""
        raise FirecError(f"building {out} from {src} failed: {exc.strerror or exc}{where}") from exc
    return out


@dataclass(frozen=True)
class _Plan:
    """What firec adds: the agent, how it starts, and the defaults the caller gives."""

    agent: Path | None
    as_init: bool
    options: dict[str, Any]

    def defaults(self, config: dict[str, Any] | None, src: Path, tree: Path) -> ImageDefaults:
        found = ImageDefaults.from_image_config(config or {}, source=str(src))
        found = found.overridden(**self.options)
        if self.agent is None:
            return found
        if not self.as_init and not has_systemd(tree):
            raise ValidationError(
                "agent_as_init",
                f"{src} has no systemd (/usr/lib/systemd/systemd), so the agent cannot start as "
                "a service; install it as init instead (the default, without --agent-as-service)",
            )
        mode = "init" if self.as_init else "service"
        return dataclasses.replace(
            found, agent=AGENT_PATH, agent_mode=mode, init=AGENT_PATH if self.as_init else None
        )


def _build(
    src: Path,
    out: Path,
    parent: Path,
    mkfs: Path,
    wanted_size: int | None,
    label: str | None,
    plan: _Plan,
) -> None:
    with contextlib.ExitStack() as cleanup:
        config: dict[str, Any] | None = None
        if src.is_dir() and not is_oci_layout_dir(src):
            tree_root = src
            fixups: dict[str, Wanted] = {"": _wanted_from(src.stat())}
        else:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".staging", dir=parent))
            cleanup.callback(_rmtree, staging)
            tree = StagingTree(staging)
            _, config = unpack_image_with_config(src, tree)
            tree_root, fixups = staging, tree.wanted
        defaults = plan.defaults(config, src, tree_root)

        measured = _measure(tree_root)
        blocks, inodes = extra_size(plan.agent, defaults.agent_mode == "service")
        content = _Content(measured.blocks + blocks, measured.inodes + inodes)
        needed = _needed_size(content)
        if wanted_size is None:
            image_size = _auto_size(content)
        elif wanted_size < needed:
            raise ValidationError(
                "size",
                f"{_human(wanted_size)} is too small for {src}: its content needs at least "
                f"{_human(needed)} as ext4 (leave size out to size the image automatically)",
            )
        else:
            image_size = wanted_size

        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(tmp_name)
        cleanup.callback(tmp.unlink, missing_ok=True)
        root_wanted = fixups[""]
        _mkfs(mkfs, tmp, tree_root, image_size, content, label, root_wanted, src)
        _apply_fixups(tmp, tree_root, fixups)
        install_firec_files(tmp, tree_root, defaults, plan.agent)
        os.chmod(tmp, 0o644)
        record_fd, record_name = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".json", dir=parent
        )
        record = Path(record_name)
        cleanup.callback(record.unlink, missing_ok=True)
        with os.fdopen(record_fd, "w") as f:
            json.dump(defaults.to_json(), f, indent=2)
            f.write("\n")
        os.chmod(record, 0o644)
        os.replace(tmp, out)
        os.replace(record, sidecar_path(out))


# -- sizing ---------------------------------------------------------------------------


def _measure(root: Path) -> _Content:
    """Count the blocks and inodes ``mkfs.ext4 -d root`` will use (an upper bound)."""
    blocks = 0
    inodes = 1
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        directory = pending.pop()
        dirent_bytes = 24  # "." and ".."
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise FirecError(f"{directory}: cannot read: {exc.strerror or exc}") from exc
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            dirent_bytes += 8 + (len(os.fsencode(entry.name)) + 3) // 4 * 4
            if stat.S_ISDIR(st.st_mode):
                inodes += 1
                pending.append(Path(entry.path))
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            inodes += 1
            if stat.S_ISREG(st.st_mode):
                data = -(-st.st_size // _BLOCK)
                extents = -(-data // _GROUP_BLOCKS)  # one extent covers at most 128 MiB
                blocks += data + (0 if extents <= 4 else -(-extents // 340))
            elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:  # longer ones need a block
                blocks += 1
        dir_blocks = -(-dirent_bytes * 5 // 4 // _BLOCK)  # 25% slack for slot packing
        blocks += max(1, dir_blocks) + (1 if dir_blocks > 1 else 0)  # + htree index
    return _Content(blocks, inodes)


def _journal_blocks(fs_blocks: int) -> int:
    """e2fsprogs' default journal size for a filesystem of ``fs_blocks`` blocks."""
    for limit, journal in (
        (2048, 0),
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if fs_blocks < limit:
            return journal
    return 262144


def _inode_count(content: _Content, size: int) -> int:
    """Inodes to ask mkfs for: the content's plus headroom, or mkfs's default ratio."""
    return max(content.inodes + max(content.inodes // 4, 1024), size // 16384)


def _overhead(size: int, inodes: int) -> int:
    """Bytes of ext4 metadata in a filesystem of ``size`` bytes with ``inodes`` inodes."""
    blocks = size // _BLOCK
    groups = -(-blocks // _GROUP_BLOCKS)
    backups = 1 + sum(1 for g in range(1, groups) if _has_backup(g))
    reserved_gdt = min(1024, -(-min(groups * 1024, 1 << 17) // 64))
    meta_blocks = groups * 2 + backups * (2 + reserved_gdt) + _journal_blocks(blocks)
    return inodes * _INODE_SIZE + meta_blocks * _BLOCK + size // 200 + _MIB


def _has_backup(group: int) -> bool:
    if group == 1:
        return True
    for base in (3, 5, 7):
        n = group
        while n % base == 0:
            n //= base
        if n == 1:
            return True
    return False


def _fits(content: _Content, size: int) -> bool:
    return content.blocks * _BLOCK + _overhead(size, _inode_count(content, size)) <= size


def _needed_size(content: _Content) -> int:
    """The smallest size (whole MiB) that holds the content."""
    size = max(8 * _MIB, content.blocks * _BLOCK)  # from 8 MiB on, mkfs adds a journal
    while not _fits(content, size):
        size = max(size + _MIB, size * 21 // 20) // _MIB * _MIB
    return size


def _auto_size(content: _Content) -> int:
    """The content's size, plus 5% reserved for root and free room, in 4 MiB steps."""
    needed = _needed_size(content)
    room = max(content.blocks * _BLOCK // 4, 16 * _MIB)
    size = (needed + room) * 20 // 19
    return -(-size // (4 * _MIB)) * 4 * _MIB


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", _MIB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size % scale else f"{size // scale} {unit}"
    return f"{size} bytes"


# -- mkfs and debugfs -----------------------------------------------------------------


def _mkfs(
    mkfs: Path,
    image: Path,
    tree: Path,
    size: int,
    content: _Content,
    label: str | None,
    root: Wanted,
    src: Path,
) -> None:
    args = [str(mkfs), "-q", "-F", "-b", str(_BLOCK), "-I", str(_INODE_SIZE)]
    args += ["-N", str(_inode_count(content, size)), "-d", str(tree)]
    args += ["-E", f"root_owner={root.uid}:{root.gid}"]
    version = e2fs.e2fsprogs_version(mkfs)
    if version is not None and version < (1, 43):
        raise FirecError(f"{mkfs} is e2fsprogs {version[0]}.{version[1]}; -d needs 1.43 or newer")
    if version is not None and version >= (1, 47):
        # Guests' older e2fsck (< 1.47) refuse filesystems with orphan_file.
        args += ["-O", "^orphan_file"]
    if label is not None:
        args += ["-L", label]
    args += [str(image), f"{size // 1024}k"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return
    output = (proc.stderr + proc.stdout).strip()
    if re.search(r"could not allocate|no space left|too small|create journal", output, re.I):
        raise ValidationError(
            "size",
            f"{_human(size)} is too small for {src} (mkfs.ext4: {_last_line(output)}); "
            "give a larger size or leave it out",
        )
    raise FirecError(f"mkfs.ext4 failed for {src} (exit {proc.returncode}): {output[-2000:]}")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _apply_fixups(image: Path, tree: Path, wanted: dict[str, Wanted]) -> None:
    """Set in the image what the staging copy could not hold."""
    with tempfile.TemporaryDirectory(prefix="firec-xattrs-") as values:
        commands = _fixup_commands(tree, wanted, Path(values))
        if commands:
            e2fs.run_debugfs(image, commands, write=True)


def _fixup_commands(tree: Path, wanted: dict[str, Wanted], values: Path) -> list[str]:
    """debugfs commands for owners, modes, device nodes and xattrs (values go to files)."""
    q = e2fs.debugfs_quote
    commands: list[str] = []
    root_mode = wanted[""].mode
    if stat.S_IMODE(root_mode) != 0o755:  # mkfs makes the root 0755 whatever the tree's is
        commands.append(f"sif / mode 0{stat.S_IFDIR | stat.S_IMODE(root_mode):o}")
    for key, want in wanted.items():
        if not key:
            continue  # owner set by mkfs (root_owner), mode above
        host = tree / key
        try:
            st: os.stat_result | None = host.lstat()
        except FileNotFoundError:
            continue  # removed by a later layer
        assert st is not None
        path = "/" + key
        if want.device is not None:
            if not stat.S_ISREG(st.st_mode):
                continue  # replaced by a later layer
            parent, _, name = key.rpartition("/")
            kind = "c" if stat.S_ISCHR(want.mode) else "b"
            major, minor = want.device
            commands += [f"rm {q(path)}", f"cd {q('/' + parent)}"]
            commands += [f"mknod {q(name)} {kind} {major} {minor}", "cd /"]
            commands += [f"sif {q(path)} mode 0{want.mode:o}", f"sif {q(path)} mtime @{want.mtime}"]
            st = None
        elif stat.S_IFMT(st.st_mode) != stat.S_IFMT(want.mode):
            continue
        elif not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != stat.S_IMODE(want.mode):
            commands.append(f"sif {q(path)} mode 0{want.mode:o}")
        if st is None or st.st_uid != want.uid:
            commands.append(f"sif {q(path)} uid {want.uid}")
        if st is None or st.st_gid != want.gid:
            commands.append(f"sif {q(path)} gid {want.gid}")
        for name, value in want.xattrs.items():
            value_file = values / str(len(commands))
            value_file.write_bytes(value)
            commands.append(f"ea_set -f {q(str(value_file))} {q(path)} {q(name)}")
    return commands


def _wanted_from(st: os.stat_result) -> Wanted:
    return Wanted(st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime))


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
