"""The sub-builders of a :class:`~firec.vm.config.Builder`: a drive, the machine, the jailer.

Each sets one part of the config and, with ``build()``, hands it back to the
builder it came from (``Config.builder(...).add_drive(...)...build()``)::

    >>> from firec.vm import Config
    >>> builder = Config.builder("vm-1", "/srv/vmlinux")
    >>> config = builder.add_drive("root", "/srv/root.ext4").is_read_only(True).build().build(
    ...     check_files=False)
    >>> config.drives[0].is_read_only
    True

They know their parent only as something that takes the finished part
(:class:`Parent`), so this module needs nothing of :mod:`firec.vm.config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

from firec.api import models
from firec.errors import ConfigError, ValidationError
from firec.vm._checks import bool_value, enum_value, path_value
from firec.vm.jailer import JailerConfig, JailerMode

__all__ = ["DriveBuilder", "JailerBuilder", "MachineBuilder", "Parent"]

_PARTUUID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)*")


class Parent(Protocol):
    """What a sub-builder hands its finished part to: the :class:`~firec.vm.config.Builder`."""

    def _with(self, **changes: Any) -> Self: ...

    def _added_drive(self, drive: models.Drive) -> Self: ...


P = TypeVar("P", bound=Parent)


@dataclass(frozen=True)
class DriveBuilder(Generic[P]):
    """Sets a drive's options; :meth:`build` adds it and returns to the config builder."""

    _parent: P
    _drive_id: str
    _src_path: Path
    _fields: dict[str, Any] = field(default_factory=dict)

    def _set(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _fields={**self._fields, **changes})

    def _field(self, name: str) -> str:
        return f"drives.{self._drive_id}.{name}"

    def is_read_only(self, read_only: bool) -> Self:
        """Attach read-only."""
        return self._set(is_read_only=bool_value(self._field("is_read_only"), read_only))

    def is_root_device(self, root: bool) -> Self:
        """The guest boots from this drive."""
        return self._set(is_root_device=bool_value(self._field("is_root_device"), root))

    def part_uuid(self, part_uuid: str) -> Self:
        """The root partition's PARTUUID (root devices only): hex digits and ``-``."""
        if not isinstance(part_uuid, str) or not _PARTUUID.fullmatch(part_uuid):
            raise ConfigError(
                self._field("partuuid"),
                f"{part_uuid!r} is not a PARTUUID: hex digits and '-' "
                "(e.g. 'a1b2c3d4-01', or a GUID)",
            )
        return self._set(partuuid=part_uuid)

    def rate_limiter(self, limiter: models.RateLimiter) -> Self:
        """Limit bandwidth and operations."""
        return self._set(rate_limiter=limiter)

    def io_engine(self, engine: models.IoEngine | str) -> Self:
        """``Sync`` (default) or ``Async`` (io_uring)."""
        return self._set(io_engine=enum_value(self._field("io_engine"), models.IoEngine, engine))

    def cache_type(self, cache: models.CacheType | str) -> Self:
        """``Unsafe`` (default) or ``Writeback``."""
        return self._set(cache_type=enum_value(self._field("cache_type"), models.CacheType, cache))

    def build(self) -> P:
        """Add the drive and go back to the config builder."""
        fields: dict[str, Any] = {"is_root_device": False, "is_read_only": False} | self._fields
        try:
            drive = models.Drive(
                drive_id=self._drive_id, path_on_host=str(self._src_path), **fields
            )
        except ValidationError as exc:
            raise ConfigError(f"drives.{self._drive_id}.{exc.field}", exc.reason) from None
        return self._parent._added_drive(drive)


@dataclass(frozen=True)
class MachineBuilder(Generic[P]):
    """Sets vCPUs, memory and the rest; :meth:`build` returns to the config builder."""

    _parent: P
    _fields: dict[str, Any]

    def _set(self, **changes: Any) -> Self:
        return dataclasses.replace(self, _fields={**self._fields, **changes})

    def vcpu_count(self, count: int) -> Self:
        """Number of vCPUs (1 to 32)."""
        return self._set(vcpu_count=count)

    def mem_size_mib(self, size: int) -> Self:
        """Guest memory in MiB."""
        return self._set(mem_size_mib=size)

    def smt(self, smt: bool) -> Self:
        """Simultaneous multithreading (x86)."""
        return self._set(smt=smt)

    def track_dirty_pages(self, track: bool) -> Self:
        """Track dirty pages, needed for diff snapshots."""
        return self._set(track_dirty_pages=track)

    def cpu_template(self, template: models.CpuTemplate | str) -> Self:
        """A static CPU template (``"T2"``, ``"C3"``...)."""
        return self._set(cpu_template=template)

    def huge_pages(self, huge_pages: models.HugePages | str) -> Self:
        """Back guest memory with huge pages (``"2M"``)."""
        return self._set(huge_pages=huge_pages)

    def build(self) -> P:
        """Set the machine configuration and go back to the config builder."""
        try:
            machine = models.MachineConfiguration(**self._fields)
        except ValidationError as exc:
            raise ConfigError(f"machine.{exc.field}", exc.reason) from None
        return self._parent._with(machine=machine)


@dataclass(frozen=True)
class JailerBuilder(Generic[P]):
    """Sets the jailer's flags; :meth:`build` returns to the config builder."""

    _parent: P
    _config: JailerConfig = field(default_factory=JailerConfig)

    def _set(self, **changes: object) -> Self:
        return dataclasses.replace(self, _config=dataclasses.replace(self._config, **changes))  # type: ignore[arg-type]

    def uid(self, uid: int) -> Self:
        """``--uid``: the (unprivileged) user Firecracker runs as; 0 needs :meth:`allow_root`."""
        return self._set(uid=uid)

    def gid(self, gid: int) -> Self:
        """``--gid``: the (unprivileged) group Firecracker runs as; 0 needs :meth:`allow_root`."""
        return self._set(gid=gid)

    def numa_node(self, node: int) -> Self:
        """Pin Firecracker to NUMA node ``node`` (through cpuset cgroups)."""
        return self._set(numa_node=node)

    def allow_root(self, allow: bool = True) -> Self:
        """Accept uid or gid 0 (refused by default): Firecracker then runs as root in the jail."""
        return self._set(allow_root=bool_value("jailer.allow_root", allow))

    def exec_file(self, path: str | os.PathLike[str]) -> Self:
        """``--exec-file``: the Firecracker binary (an absolute path)."""
        return self._set(exec_file=path_value("jailer.exec_file", path))

    def jailer_binary(self, path: str | os.PathLike[str]) -> Self:
        """The jailer binary (an absolute path)."""
        return self._set(jailer_binary=path_value("jailer.jailer_binary", path))

    def chroot_base_dir(self, path: str | os.PathLike[str]) -> Self:
        """``--chroot-base-dir`` (an absolute path)."""
        return self._set(chroot_base_dir=path_value("jailer.chroot_base_dir", path))

    def mode(self, mode: JailerMode | str) -> Self:
        """Attached (supervised, the default) or daemon (``--daemonize``)."""
        return self._set(mode=enum_value("jailer.mode", JailerMode, mode))

    def daemonize(self, daemonize: bool = True) -> Self:
        """``--daemonize``: the same as ``mode(JailerMode.DAEMON)``."""
        daemon = bool_value("jailer.mode", daemonize)
        return self._set(mode=JailerMode.DAEMON if daemon else JailerMode.ATTACHED)

    def new_pid_ns(self, new_pid_ns: bool = True) -> Self:
        """``--new-pid-ns``."""
        return self._set(new_pid_ns=bool_value("jailer.new_pid_ns", new_pid_ns))

    def netns(self, path: str | os.PathLike[str]) -> Self:
        """``--netns``: the network namespace to join (``/var/run/netns/<name>``)."""
        return self._set(netns=path_value("jailer.netns", path))

    def cgroup(self, value: str) -> Self:
        """``--cgroup <file>=<value>`` (repeatable)."""
        return self._set(cgroups=(*self._config.cgroups, value))

    def cgroup_version(self, version: Literal[1, 2]) -> Self:
        """``--cgroup-version``."""
        return self._set(cgroup_version=version)

    def parent_cgroup(self, name: str) -> Self:
        """``--parent-cgroup``."""
        return self._set(parent_cgroup=name)

    def resource_limit(self, value: str) -> Self:
        """``--resource-limit <resource>=<value>`` (repeatable)."""
        return self._set(resource_limits=(*self._config.resource_limits, value))

    def extra_args(self, *args: str) -> Self:
        """More Firecracker arguments, passed after ``--``."""
        return self._set(extra_args=(*self._config.extra_args, *args))

    def build(self) -> P:
        """Finish the jailer settings and go back to the config builder."""
        return self._parent._with(jailer=self._config)
