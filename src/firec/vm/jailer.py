"""Running Firecracker under its jailer: the jailer's settings and the jail on disk.

The jailer chroots Firecracker into
``<chroot_base_dir>/<exec file name>/<id>/root``, switches to ``uid``/``gid``,
puts it in cgroups and (optionally) a network and a PID namespace. Firecracker
then sees only what is inside the chroot, so every host path firec gives it
(kernel, initrd, drives, fifos, log and metrics files, sockets) must be
brought in and translated: :mod:`firec.vm.layout` does that, for plain and
jailed VMs alike (:class:`Jail` is its :class:`~firec.vm.layout.JailedLayout`).

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
    jail = config.layout                         # a firec.vm.layout.JailedLayout
    jail.root                                    # /srv/jailer/firecracker/vm-1/root
    jail.seen("/srv/images/vmlinux")             # /vmlinux (as Firecracker sees it)
    jail.on_host("/run/firecracker.socket")      # .../vm-1/root/run/firecracker.socket
"""

from __future__ import annotations

import contextlib
import enum
import errno
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from firec.errors import ConfigError
from firec.vm._access import may_access
from firec.vm._checks import absolute_path, bool_value, enum_value, int_value, str_value
from firec.vm.layout import JailedLayout

__all__ = ["Jail", "JailerConfig", "JailerMode", "may_access", "validate_id"]

#: A jailer chroot and the translation of paths into and out of it: the jailed
#: :class:`~firec.vm.layout.Layout` (this name is kept for code written before it).
Jail = JailedLayout

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
