"""Running Firecracker under its jailer: the jailer's settings and the jail on disk.

The jailer chroots Firecracker into
``<chroot_base_dir>/<exec file name>/<id>/root``, switches to ``uid``/``gid``,
puts it in cgroups and (optionally) a network and a PID namespace. Firecracker
then sees only what is inside the chroot, so every host path firec gives it
(kernel, initrd, drives, fifos, log and metrics files, sockets) must be
brought in and translated. :class:`Jail` is the one place where that happens.

Example::

    import firec

    config = (
        firec.Config.builder("vm-1", "/srv/images/vmlinux")
        .jailer_cfg()
            .jailer_binary("/usr/local/bin/jailer")
            .exec_file("/usr/local/bin/firecracker")
            .uid(1234).gid(1234)
            .cgroup_version(1)
            .build()
        .build()
    )
    jail = config.jail
    jail.root                                    # /srv/jailer/firecracker/vm-1/root
    jail.inside("/srv/images/vmlinux")           # /vmlinux (as Firecracker sees it)
    jail.on_host("/run/firecracker.socket")      # .../vm-1/root/run/firecracker.socket
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from firec.errors import ConfigError, MachineError
from firec.snapshots._sparse import copy_sparse
from firec.vm._checks import absolute_path, bool_value, enum_value, int_value, str_value

__all__ = ["Jail", "JailerConfig", "JailerMode", "may_access", "validate_id"]

DEFAULT_CHROOT_BASE = Path("/srv/jailer")
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_CGROUP_ARG = re.compile(r"[a-z_]+\.[a-zA-Z0-9_.]+=[^\x00-\x1f\x7f]+")
_RLIMITS = ("fsize", "no-file")


def validate_id(vm_id: str, *, field_name: str = "vm_id") -> str:
    """Check a microVM id against the jailer's and Firecracker's rules.

    Both accept 1 to 64 ASCII letters, digits and hyphens, and nothing else
    (no trailing newline either).
    """
    if not isinstance(vm_id, str) or not _ID.fullmatch(vm_id):
        raise ConfigError(
            field_name,
            f"{vm_id!r} is not a valid id: use 1 to 64 ASCII letters, digits and hyphens",
        )
    return vm_id


class JailerMode(enum.StrEnum):
    """How the jailer process relates to the caller.

    * ``ATTACHED``: firec supervises it; the serial console is captured.
    * ``DAEMON``: ``--daemonize``: setsid() and stdio to ``/dev/null``; the
      console is lost unless a ``serial`` output path is set (Firecracker 1.14+).
    """

    ATTACHED = "attached"
    DAEMON = "daemon"


@dataclass(frozen=True, kw_only=True)
class JailerConfig:
    """Every flag of the jailer.

    Attributes:
        jailer_binary: the jailer executable (default: ``JAILER_BIN``, then
            ``jailer`` on ``PATH``).
        exec_file: the Firecracker executable the jailer copies in and runs
            (default: ``FIRECRACKER_BIN``, then ``firecracker`` on ``PATH``).
        uid, gid: whom Firecracker runs as (``--uid``/``--gid``). 0 (root) is
            refused unless :attr:`allow_root`: Firecracker running as root in the
            jail would defeat the jailer. Give each VM an unprivileged uid and gid.
        allow_root: accept uid or gid 0.
        chroot_base_dir: ``--chroot-base-dir``.
        numa_node: pin to a NUMA node (turned into ``cpuset`` cgroup values).
        mode: :class:`JailerMode` (``--daemonize`` when ``DAEMON``).
        new_pid_ns: ``--new-pid-ns``; the pid then comes from the jailer's pidfile.
        netns: ``--netns``: path of a network namespace to join.
        cgroups: ``--cgroup`` values, ``"<file>=<value>"`` (``"cpu.shares=10"``).
        cgroup_version: ``--cgroup-version`` (1 or 2).
        parent_cgroup: ``--parent-cgroup``.
        resource_limits: ``--resource-limit`` values (``"no-file=1024"``).
        extra_args: further Firecracker arguments, passed after ``--``.
    """

    jailer_binary: Path | None = None
    exec_file: Path | None = None
    uid: int = 0
    gid: int = 0
    allow_root: bool = False
    chroot_base_dir: Path = DEFAULT_CHROOT_BASE
    numa_node: int | None = None
    mode: JailerMode = JailerMode.ATTACHED
    new_pid_ns: bool = False
    netns: Path | None = None
    cgroups: tuple[str, ...] = ()
    cgroup_version: Literal[1, 2] | None = None
    parent_cgroup: str | None = None
    resource_limits: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()

    def validate(self) -> None:
        """Refuse values the jailer would refuse, and a root uid or gid, naming the field."""
        for name in ("jailer_binary", "exec_file", "netns"):
            value = getattr(self, name)
            if value is not None:
                absolute_path(f"jailer.{name}", value)
        absolute_path("jailer.chroot_base_dir", self.chroot_base_dir, "directory")
        enum_value("jailer.mode", JailerMode, self.mode)
        bool_value("jailer.new_pid_ns", self.new_pid_ns)
        bool_value("jailer.allow_root", self.allow_root)
        for name in ("uid", "gid"):
            value = int_value(f"jailer.{name}", getattr(self, name), minimum=0, maximum=2**32 - 2)
            if value == 0 and not self.allow_root:
                who = "root" if name == "uid" else "root's group"
                raise ConfigError(
                    f"jailer.{name}",
                    f"{name} 0 is {who}: Firecracker would run as root inside the jail, which "
                    "defeats the jailer; give an unprivileged uid and gid (e.g. .uid(1234)"
                    ".gid(1234)), or allow_root() to run it as root all the same",
                )
        for field_name in ("cgroups", "resource_limits", "extra_args"):
            if not isinstance(getattr(self, field_name), tuple | list):
                raise ConfigError(f"jailer.{field_name}", "must be a tuple of strings")
        for arg in self.cgroups:
            if not isinstance(arg, str) or not _CGROUP_ARG.fullmatch(arg):
                raise ConfigError(
                    "jailer.cgroups",
                    f"{arg!r} is not <cgroup_file>=<value> (e.g. cpu.shares=10)",
                )
        for arg in self.resource_limits:
            name, sep, value = arg.partition("=") if isinstance(arg, str) else ("", "", "")
            if not sep or name not in _RLIMITS or not (value.isascii() and value.isdigit()):
                raise ConfigError(
                    "jailer.resource_limits",
                    f"{arg!r} is not <resource>=<number>, resource one of {', '.join(_RLIMITS)}",
                )
        for arg in self.extra_args:
            str_value("jailer.extra_args", arg, what="a command-line argument", empty=True)
        version = self.cgroup_version
        if version is not None and (type(version) is not int or version not in (1, 2)):
            raise ConfigError("jailer.cgroup_version", f"must be 1 or 2, not {version!r}")
        if self.parent_cgroup is not None:
            parent = str_value("jailer.parent_cgroup", self.parent_cgroup, what="a cgroup path")
            if parent.startswith("/") or ".." in parent.split("/"):
                raise ConfigError(
                    "jailer.parent_cgroup",
                    f"{parent!r}: must be a cgroup path relative to the cgroup root, without "
                    "'..' (e.g. 'firecracker' or 'tenants/a')",
                )
        if self.numa_node is not None:
            int_value("jailer.numa_node", self.numa_node, minimum=0)
            if not _numa_cpus_path(self.numa_node).exists():
                raise ConfigError(
                    "jailer.numa_node", f"this host has no NUMA node {self.numa_node}"
                )

    def all_cgroups(self) -> tuple[str, ...]:
        """The ``--cgroup`` values, including those implied by :attr:`numa_node`."""
        if self.numa_node is None:
            return self.cgroups
        cpus = _numa_cpus_path(self.numa_node).read_text().strip()
        return (f"cpuset.mems={self.numa_node}", f"cpuset.cpus={cpus}", *self.cgroups)


def _numa_cpus_path(node: int) -> Path:
    return Path(f"/sys/devices/system/node/node{node}/cpulist")


# tags of POSIX ACL entries (system.posix_acl_access, after a 4-byte version header)
_ACL_USER = 0x02
_ACL_GROUP_OBJ = 0x04
_ACL_GROUP = 0x08
_ACL_MASK = 0x10
_ACL_OTHER = 0x20
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")


def _acl_entries(path: Path) -> list[tuple[int, int, int]] | None:
    """The file's POSIX access ACL as ``(tag, perm, id)`` entries, or ``None`` without one."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return None  # none set, or a filesystem without ACLs
    if len(raw) < _ACL_HEADER.size or (len(raw) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        return None
    return [
        _ACL_ENTRY.unpack_from(raw, offset)
        for offset in range(_ACL_HEADER.size, len(raw), _ACL_ENTRY.size)
    ]


def may_access(path: str | os.PathLike[str], uid: int, gid: int, *, write: bool = False) -> bool:
    """Whether a process of ``uid``:``gid`` (no other group) may read (and write) ``path``.

    Decided by the file's own owner, mode and POSIX ACL, as the kernel
    decides for the jailed Firecracker (the jailer leaves it no
    supplementary group). The directories above the file are not looked at:
    a hard link in the jail does not go through them. uid 0 may do anything.
    """
    if uid == 0:
        return True
    st = os.stat(path)
    want = 0o6 if write else 0o4
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return (mode >> 6) & want == want
    entries = _acl_entries(Path(path))
    if entries is None:
        bits = (mode >> 3) if st.st_gid == gid else mode
        return bits & want == want
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    for tag, perm, ident in entries:
        if tag == _ACL_USER and ident == uid:
            return perm & mask & want == want
    groups = [
        perm
        for tag, perm, ident in entries
        if (tag == _ACL_GROUP_OBJ and st.st_gid == gid) or (tag == _ACL_GROUP and ident == gid)
    ]
    if groups:
        return any(perm & mask & want == want for perm in groups)
    other = next((perm for tag, perm, _ in entries if tag == _ACL_OTHER), mode)
    return other & want == want


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class Jail:
    """A jailer chroot, and the translation of paths into and out of it.

    Attributes:
        base: ``<chroot_base_dir>/<exec file name>/<id>``; the jailer makes it.
        uid, gid: the owner of what firec brings in.
    """

    base: Path
    uid: int
    gid: int

    @classmethod
    def for_vm(cls, vm_id: str, jailer: JailerConfig, exec_file: Path) -> Jail:
        """The jail the jailer will make for ``vm_id``."""
        return cls(jailer.chroot_base_dir / exec_file.name / vm_id, jailer.uid, jailer.gid)

    @property
    def root(self) -> Path:
        """The chroot: what Firecracker sees as ``/``."""
        return self.base / "root"

    def inside(self, host_path: str | os.PathLike[str]) -> str:
        """Where a file brought in from ``host_path`` appears to Firecracker (``/<name>``)."""
        return str(PurePosixPath("/") / Path(host_path).name)

    def on_host(self, jail_path: str | os.PathLike[str]) -> Path:
        """The host path of ``jail_path`` (a path as Firecracker sees it)."""
        relative = PurePosixPath(os.fspath(jail_path))
        if not relative.is_absolute():
            relative = PurePosixPath("/") / relative
        if ".." in relative.parts:
            raise ConfigError("path", f"{jail_path} escapes the jail")
        return self.root / relative.relative_to("/")

    def bring_in(
        self,
        host_path: str | os.PathLike[str],
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
        inside = at if at is not None else self.inside(source)
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
        self, host_path: str | os.PathLike[str], *, writable: bool = False, field: str = "path"
    ) -> Literal["link", "copy", "node"]:
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

    def make_fifo(self, jail_path: str) -> Path:
        """Create a fifo at ``jail_path`` inside the jail, owned by the jail's user."""
        host = self.on_host(jail_path)
        host.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(host, 0o600)
        os.chown(host, self.uid, self.gid)
        return host

    def make_dirs(self, jail_path: str) -> Path:
        """Create a directory (and parents) inside the jail, owned by the jail's user."""
        host = self.on_host(jail_path)
        host.mkdir(parents=True, exist_ok=True)
        os.chown(host, self.uid, self.gid)
        return host

    def pidfile(self, exec_file: Path) -> Path:
        """The jailer's pidfile: ``<root>/<exec file name>.pid``."""
        return self.root / f"{exec_file.name}.pid"

    def remove(self) -> None:
        """Remove the whole jail directory (``base``), and ``<exec name>/`` if now empty."""
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.base.parent.rmdir()


def jailer_argv(
    jailer: JailerConfig,
    *,
    jailer_binary: Path,
    exec_file: Path,
    vm_id: str,
    firecracker_args: Sequence[str],
) -> list[str]:
    """The jailer command line for ``vm_id``, with Firecracker's arguments after ``--``."""
    argv = [
        str(jailer_binary),
        "--id",
        vm_id,
        "--exec-file",
        str(exec_file),
        "--uid",
        str(jailer.uid),
        "--gid",
        str(jailer.gid),
        "--chroot-base-dir",
        str(jailer.chroot_base_dir),
    ]
    if jailer.netns is not None:
        argv += ["--netns", str(jailer.netns)]
    if jailer.mode is JailerMode.DAEMON:
        argv.append("--daemonize")
    if jailer.new_pid_ns:
        argv.append("--new-pid-ns")
    for cgroup in jailer.all_cgroups():
        argv += ["--cgroup", cgroup]
    if jailer.cgroup_version is not None:
        argv += ["--cgroup-version", str(jailer.cgroup_version)]
    if jailer.parent_cgroup is not None:
        argv += ["--parent-cgroup", jailer.parent_cgroup]
    for limit in jailer.resource_limits:
        argv += ["--resource-limit", limit]
    return [*argv, "--", *firecracker_args, *jailer.extra_args]


def cgroup_dirs(jailer: JailerConfig, vm_id: str, exec_file: Path) -> list[Path]:
    """The cgroup directories the jailer creates for ``vm_id`` (to remove on cleanup).

    With cgroup v1 there is one per controller named in :meth:`JailerConfig.all_cgroups`,
    ``/sys/fs/cgroup/<controller>/<parent>/<id>``; with v2 one,
    ``/sys/fs/cgroup/<parent>/<id>``. The parent defaults to the exec file's name.
    """
    parent = jailer.parent_cgroup or exec_file.name
    version = jailer.cgroup_version or 1
    root = Path("/sys/fs/cgroup")
    if version == 2:
        return [root / parent / vm_id] if jailer.all_cgroups() else []
    controllers = {arg.split(".", 1)[0] for arg in jailer.all_cgroups()}
    return [root / controller / parent / vm_id for controller in sorted(controllers)]


#: How long :func:`remove_cgroups` waits for a busy cgroup to empty (seconds).
CGROUP_BUSY_WAIT = 5.0


def remove_cgroups(
    directories: Iterable[Path], *, busy_wait: float = CGROUP_BUSY_WAIT
) -> list[str]:
    """Remove a VM's cgroup directories; return those that could not be removed.

    A cgroup still busy (``EBUSY``) is tried again for up to ``busy_wait``
    seconds in all: a VMM killed as pid 1 of its own PID namespace
    (``--new-pid-ns``) stays in its cgroup until its parent reaps it.
    Each parent (the jailer's ``--parent-cgroup``, shared by VMs) goes too when
    no other VM uses it any more.
    """
    deadline = time.monotonic() + busy_wait
    left = []
    for directory in directories:
        try:
            _rmdir_once_free(directory, deadline)
        except FileNotFoundError:
            continue
        except OSError as exc:
            left.append(f"{directory}: {exc.strerror}")
            continue
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # busy while another VM is in it: fine
    return left


def _rmdir_once_free(directory: Path, deadline: float) -> None:
    """``rmdir``, again every 10 ms while the cgroup is busy, until ``deadline``."""
    while True:
        try:
            directory.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)
