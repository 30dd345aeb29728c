"""Firecracker run under the jailer: :class:`JailedLayout` (see :mod:`firec.vm.layout`)."""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from firec.errors import ConfigError, MachineError
from firec.snapshots._sparse import copy_sparse
from firec.vm._access import may_access
from firec.vm.layout._base import BringIn, JailSettings, Layout, PathArg

__all__ = ["JAILED_SOCKET_PATH", "JailedLayout"]

#: The API socket a jailed Firecracker is told to use, unless the config names one.
JAILED_SOCKET_PATH = "/run/firecracker.socket"


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class JailedLayout(Layout):
    """A jailer chroot, and the translation of paths into and out of it.

    Firecracker sees only the chroot (:attr:`root`): a file the user gives is
    brought in at ``/<its name>`` (:meth:`bring_in`), what firec makes for it
    is made inside, owned by the jail's ``uid``/``gid``, and everything goes
    with :meth:`remove`. :class:`firec.vm.jailer.Jail` is this class.

    Attributes:
        base: ``<chroot_base_dir>/<exec file name>/<id>``; the jailer makes it.
        uid, gid: whom Firecracker runs as, and the owner of what firec brings in.
    """

    base: Path
    uid: int
    gid: int
    jailed: ClassVar[bool] = True

    @classmethod
    def for_vm(cls, vm_id: str, jailer: JailSettings, exec_file: Path) -> JailedLayout:
        """The jail the jailer will make for ``vm_id``."""
        return cls(jailer.chroot_base_dir / exec_file.name / vm_id, jailer.uid, jailer.gid)

    @classmethod
    def _for(
        cls, vm_id: str, vm_dir: Path, jailer: JailSettings | None, exec_file: Callable[[], Path]
    ) -> JailedLayout:
        assert jailer is not None
        return cls.for_vm(vm_id, jailer, exec_file())

    def record(self) -> dict[str, Any]:
        """The jail's directory and owner."""
        return {"jail": str(self.base), "jail_owner": (self.uid, self.gid)}

    @classmethod
    def check_runtime_path(cls, field: str, value: object) -> None:
        """A path inside the jail: any is taken, from the jail's top."""

    @classmethod
    def config_directories(cls, jailer: JailSettings | None) -> list[tuple[str, Path]]:
        """The chroot base (``jailer.chroot_base_dir``)."""
        return [("jailer.chroot_base_dir", jailer.chroot_base_dir)] if jailer is not None else []

    @classmethod
    def check_input_name(cls, field: str, path: Path, taken: dict[str, str]) -> None:
        """Refuse a second file of the same name: inside the jail both would be ``/<name>``."""
        other = taken.setdefault(path.name, field)
        if other != field:
            raise ConfigError(
                field,
                f"{path.name} is also the file name of {other}: inside the jail "
                "both would be /" + path.name + "; rename one",
            )

    @property
    def root(self) -> Path:
        """The chroot: what Firecracker sees as ``/``."""
        return self.base / "root"

    @property
    def chroot_base(self) -> Path:
        """The jailer's ``--chroot-base-dir``: :attr:`base` is ``<it>/<exec file name>/<id>``."""
        return self.base.parent.parent

    def seen(self, host_path: PathArg) -> str:
        """A path inside the chroot as seen from it; any other file at ``/<its name>``.

        The second is where :meth:`bring_in` puts a file the user gave, and
        where Firecracker makes a socket or file whose host path the config names.
        """
        path = Path(host_path)
        if path.is_absolute() and path.is_relative_to(self.root):
            return str(PurePosixPath("/") / path.relative_to(self.root))
        return str(PurePosixPath("/") / path.name)

    def inside(self, host_path: PathArg) -> str:
        """Where :meth:`bring_in` puts ``host_path`` by default: ``/<its name>``.

        The older name of :meth:`seen` for files outside the jail.
        """
        return str(PurePosixPath("/") / Path(host_path).name)

    def on_host(self, seen_path: PathArg) -> Path:
        """The host path of ``seen_path`` (relative: from the jail's top); no ``..`` escapes."""
        relative = PurePosixPath(os.fspath(seen_path))
        if not relative.is_absolute():
            relative = PurePosixPath("/") / relative
        if ".." in relative.parts:
            raise ConfigError("path", f"{seen_path} escapes the jail")
        return self.root / relative.relative_to("/")

    def api_socket(self, given: PathArg | None) -> str:
        """``given`` (a path inside the jail), else :data:`JAILED_SOCKET_PATH`."""
        return os.fspath(given) if given is not None else JAILED_SOCKET_PATH

    def own_file(self, name: str) -> Path:
        """``<root>/<name>``."""
        return self.root / name

    def holds(self, host_path: Path) -> bool:
        """Whether ``host_path`` is in the jail's directory."""
        # is_relative_to, without the exception it raises and catches for a path outside
        return os.path.join(host_path, "").startswith(os.path.join(self.base, ""))

    def pidfile(self, exec_file: Path | None = None) -> Path:
        """The jailer's pidfile: ``<root>/<exec file name>.pid``."""
        name = exec_file.name if exec_file is not None else self.base.parent.name
        return self.root / f"{name}.pid"

    @property
    def owner(self) -> tuple[int, int]:
        """The jail's uid and gid."""
        return (self.uid, self.gid)

    @property
    def vmm_uid(self) -> int:
        """The jail's uid."""
        return self.uid

    @property
    def log_timezone(self) -> datetime.tzinfo:
        """UTC: the chroot has no ``/etc/localtime``."""
        return datetime.UTC

    def bring_in(
        self,
        host_path: PathArg,
        *,
        writable: bool = False,
        at: str | None = None,
        field: str = "path",
    ) -> str:
        """Bring a file the user gave into the jail; return its path as Firecracker sees it.

        The user's file is never changed: not its owner, not its mode, not its
        times. How it gets in (see :meth:`check_bring_in`):

        * Read-only use (``writable=False``: the kernel, an initrd, a
          read-only drive, a snapshot's files): a hard link when the jail's
          uid/gid may already read the file as it is (its own owner, mode and
          ACL decide; the directories above it do not matter to a link);
          otherwise a copy owned by the jail's user, mode 0400 (a reflink
          where the filesystem has them, keeping holes otherwise).
        * ``writable=True`` (a writable drive): the guest writes to the
          user's file, as it would without a jail, so only a hard link will
          do, and only when the jail's uid/gid may already read and write
          the file as it is. A copy would throw the guest's writes away with
          the jail, and giving the file to the jail's user would change it:
          both are refused, with the fix.

        A block device gets a new device node in the jail (the user's node
        stays as it is), owned by the jail's user.

        Args:
            host_path: the file on the host.
            writable: whether Firecracker writes to it.
            at: where Firecracker sees it (default ``/<file name>``).
            field: the config field naming the file, for errors.

        Raises:
            ConfigError: a writable file the jail's user may not read and
                write as it is, or that cannot be hard-linked into the jail
                (another filesystem); the message says what to do.
        """
        source = Path(host_path)
        inside = at if at is not None else self.seen(source)
        target = self.on_host(inside)
        how = self.check_bring_in(source, writable=writable, field=field)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if target.samefile(source):
                return inside
            raise MachineError(f"cannot bring {source} into the jail: {target} already exists")
        if how == "node":
            st = source.stat()
            mode = stat.S_IFBLK | (0o600 if writable else 0o400)
            os.mknod(target, mode, st.st_rdev)
            os.chown(target, self.uid, self.gid)
            return inside
        if how == "link":
            try:
                os.link(source, target)
                return inside
            except OSError as exc:
                if writable:
                    raise ConfigError(
                        field,
                        f"cannot hard-link the writable file {source} into the jail "
                        f"{self.root} ({exc.strerror}): a copy would lose the guest's writes. "
                        "Keep the file on the same filesystem (and mount) as the jail's "
                        "chroot base, or make the drive read-only",
                    ) from exc
        # a copy of our own: reflink or sparse copy, then it is ours to give away
        copy_sparse(source, target)
        os.chown(target, self.uid, self.gid)
        os.chmod(target, 0o400)
        return inside

    def check_bring_in(
        self, host_path: PathArg, *, writable: bool = False, field: str = "path"
    ) -> BringIn:
        """How :meth:`bring_in` would bring ``host_path`` in, or why it cannot.

        Changes nothing, so that a config can be refused before any of its
        files is touched. ``"link"``: a hard link to the user's file;
        ``"copy"``: a copy owned by the jail's user; ``"node"``: a new device
        node for a block device.
        """
        source = Path(host_path)
        st = source.stat()
        if stat.S_ISBLK(st.st_mode):
            return "node"
        usable = may_access(source, self.uid, self.gid, write=writable)
        if not writable:
            return "link" if usable else "copy"
        if not usable:
            raise ConfigError(
                field,
                f"the jailed Firecracker (uid {self.uid}, gid {self.gid}) may not read and "
                f"write {source} (owner {st.st_uid}:{st.st_gid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}), and firec never changes a file you give it. "
                f"Give the VM its disk (chown {self.uid}:{self.gid} {source}), or let the "
                f"jail's group write it (chgrp {self.gid} {source}; chmod g+rw {source}), "
                "or make the drive read-only",
            )
        base = _existing_ancestor(self.base)
        if base.stat().st_dev != st.st_dev:
            raise ConfigError(
                field,
                f"the writable file {source} is on another filesystem than the jail "
                f"({base}): it cannot be hard-linked in, and a copy would lose the guest's "
                "writes. Keep it on the chroot base's filesystem, or make the drive read-only",
            )
        return "link"

    def opened_file(self, host_path: PathArg, at: str | None = None) -> Path:
        """``host_path`` itself: it is linked or copied to ``at``."""
        return Path(host_path)

    def make_root(self) -> None:
        """Make the chroot (the jailer makes it too, and takes one that is there)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def make_dirs(self, seen_dir: PathArg) -> Path:
        """Create a directory (and parents) inside the jail, owned by the jail's user."""
        host = self.on_host(seen_dir)
        host.mkdir(parents=True, exist_ok=True)
        os.chown(host, self.uid, self.gid)
        return host

    def make_own_dirs(self, seen_dir: PathArg) -> None:
        """:meth:`make_dirs`: everything in the jail is the VM's own."""
        self.make_dirs(seen_dir)

    def make_device(self, device: Path) -> None:
        """A node of the host's character ``device`` at the same path in the jail, for its user."""
        target = self.on_host(str(device))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(target, 0o600 | stat.S_IFCHR, device.stat().st_rdev)
        os.chown(target, self.uid, self.gid)

    def staging_dir(self, target: Path) -> Path:
        """A new directory in the jail, owned by its user (moved out to ``target`` after)."""
        return self.make_dirs(f"/snapshot-{secrets.token_hex(4)}")

    def remove(self) -> list[str]:
        """Remove the whole jail directory (``base``), and ``<exec name>/`` if now empty."""
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.base.parent.rmdir()
        return [f"{self.base}: could not be removed"] if self.base.exists() else []
