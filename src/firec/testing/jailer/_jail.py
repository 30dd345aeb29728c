"""The jail: a jailer command line checked, then what the jailer does, in its order.

:meth:`Jail.from_args` checks the arguments as the jailer does (id, exec file,
chroot base, uid and gid, parent cgroup, cgroups, resource limits);
:meth:`Jail.run` makes the jail directory and copies the exec file in, joins
``--netns``, sets the resource limits and cgroups, makes a private mount
namespace, owns the jail's directories, daemonizes, and execs the exec file
(with ``--new-pid-ns``, as pid 1 of a new PID namespace).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import time
from dataclasses import dataclass
from typing import NoReturn

from ._args import parse_uint
from ._cgroups import Cgroup, bad_components, parse_cgroups
from ._panic import Panic, jailer_error, os_error

__all__ = ["DEFAULT_NO_FILE", "Jail", "process_cpu_us"]

DEFAULT_NO_FILE = 2048
_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19
_KEPT_ENV = ("FIREC_EMULATOR_VERSION", "LD_LIBRARY_PATH")

# --resource-limit name: (rlimit, what a failure calls it)
_RESOURCES = {
    "fsize": (resource.RLIMIT_FSIZE, "file size"),
    "no-file": (resource.RLIMIT_NOFILE, "number of file descriptors"),
}


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _canonical(given: str) -> str:
    try:
        if not given:
            raise FileNotFoundError(2, os.strerror(2))
        return os.path.realpath(given, strict=True)
    except OSError as exc:
        raise jailer_error(f"Failed to canonicalize path {given}: {os_error(exc)}") from None


def _validate_id(vm_id: str) -> None:
    size = len(vm_id.encode())
    if not 1 <= size <= 64:
        raise jailer_error(
            f"Invalid instance ID: invalid len ({size});  the length must be between 1 and 64"
        )
    for position, char in enumerate(vm_id):
        if not (char.isalnum() or char == "-"):
            raise jailer_error(f"Invalid instance ID: invalid char ({char}) at position {position}")


def _resource_limits(specs: list[str]) -> dict[str, int]:
    limits = {"fsize": resource.RLIM_INFINITY, "no-file": DEFAULT_NO_FILE}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep:
            raise jailer_error(f"Invalid format for resources limits: {spec}")
        value, problem = parse_uint(text, 64)
        if value is None:
            raise jailer_error(f"Invalid limit value for resource: {text}: {problem}")
        if name not in _RESOURCES:
            raise jailer_error(f"Invalid resource argument: {name}")
        limits[name] = value if value < 1 << 63 else resource.RLIM_INFINITY
    return limits


@dataclass(frozen=True)
class Jail:
    """A checked jailer command line: what the jailer will do."""

    vm_id: str
    exec_file: str
    exec_name: str
    root: str
    uid: int
    gid: int
    netns: str | None
    daemonize: bool
    new_pid_ns: bool
    cgroups: list[Cgroup]
    limits: dict[str, int]
    firecracker_args: list[str]

    @classmethod
    def from_args(cls, args: dict[str, str | list[str] | bool], extra: list[str]) -> Jail:
        """Check the arguments in the jailer's order; raises Panic."""
        vm_id = str(args["id"])
        _validate_id(vm_id)
        exec_file = _canonical(str(args["exec-file"]))
        if not os.path.isfile(exec_file):
            raise jailer_error(f"{exec_file} is not a file")
        exec_name = os.path.basename(exec_file)
        base = _canonical(str(args["chroot-base-dir"]))
        if not os.path.isdir(base):
            raise jailer_error(f"{base} is not a directory")
        ids = {}
        for name in ("uid", "gid"):
            number, _ = parse_uint(str(args[name]), 32)
            if number is None:
                raise jailer_error(f"Invalid {name}: {args[name]}")
            ids[name] = number
        parent = str(args.get("parent-cgroup", exec_name))
        if bad_components(parent):
            raise jailer_error(
                "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
            )
        specs = args.get("cgroup", [])
        assert isinstance(specs, list)
        cgroups = parse_cgroups(specs, str(args["cgroup-version"]), vm_id, parent)
        limit_specs = args.get("resource-limit", [])
        assert isinstance(limit_specs, list)
        netns = args.get("netns")
        return cls(
            vm_id=vm_id,
            exec_file=exec_file,
            exec_name=exec_name,
            root=os.path.join(base, exec_name, vm_id, "root"),
            uid=ids["uid"],
            gid=ids["gid"],
            netns=str(netns) if netns is not None else None,
            daemonize=bool(args.get("daemonize")),
            new_pid_ns=bool(args.get("new-pid-ns")),
            cgroups=cgroups,
            limits=_resource_limits(limit_specs),
            firecracker_args=extra,
        )

    @property
    def pidfile(self) -> str:
        """``<root>/<exec file name>.pid`` (with ``--new-pid-ns``)."""
        return os.path.join(self.root, f"{self.exec_name}.pid")

    def run(self, start_us: int, start_cpu_us: int) -> NoReturn:
        """Set everything up and exec the exec file; raises Panic."""
        reused = self._copy_exec_file()
        if self.netns is not None:
            self._join_netns(self.netns)
        self._set_limits()
        for cgroup in self.cgroups:
            cgroup.write_value()
        for cgroup in self.cgroups:
            cgroup.attach(os.getpid())
        self._private_mounts()
        for inside in ("", "dev", "dev/net", "run"):
            self._own_dir(inside)
        if reused or os.path.lexists(os.path.join(self.root, "dev/net/tun")):
            raise jailer_error(
                # the jailer prints the C string of the path, NUL byte included
                "Failed to create /dev/net/tun\x00 via mknod inside the jail: "
                + os_error(FileExistsError(17, os.strerror(17)))
            )
        if self.daemonize:
            self._daemonize()
        cpu_us = process_cpu_us() - start_cpu_us
        if not self.new_pid_ns:
            self._exec(start_us, start_cpu_us, 0)
        try:
            _libc_call("unshare", _CLONE_NEWPID)
            child = os.fork()
        except OSError as exc:
            raise jailer_error(f"Failed to exec into new PID namespace: {os_error(exc)}") from None
        if child == 0:
            try:
                self._exec(start_us, 0, cpu_us)
            except Panic as panic:
                panic.die()
        try:
            with open(self.pidfile, "w", encoding="ascii") as pidfile:
                pidfile.write(str(child))
        except OSError as exc:
            raise jailer_error(
                f"Failed to write PID file {self.pidfile}: {os_error(exc)}"
            ) from None
        os._exit(0)

    def _copy_exec_file(self) -> bool:
        """Make the jail directory and copy the exec file in; whether it was there already."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise jailer_error(f"Failed to create directory {self.root}: {os_error(exc)}") from None
        target = os.path.join(self.root, self.exec_name)
        there = os.path.lexists(target)
        try:
            shutil.copyfile(self.exec_file, target)
            shutil.copymode(self.exec_file, target)
        except OSError as exc:
            raise jailer_error(
                f"Failed to copy {self.exec_file} to {target}: {os_error(exc)}"
            ) from None
        return there

    @staticmethod
    def _join_netns(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise jailer_error(f"Failed to open file {path}: {os_error(exc)}") from None
        try:
            _libc_call("setns", fd, _CLONE_NEWNET)
        except OSError as exc:
            raise jailer_error(
                f"Failed to join network namespace: netns: {os_error(exc)}"
            ) from None
        finally:
            os.close(fd)

    def _set_limits(self) -> None:
        for name in ("fsize", "no-file"):
            limit, what = _RESOURCES[name]
            value = self.limits[name]
            try:
                resource.setrlimit(limit, (value, value))
            except (OSError, ValueError):
                raise jailer_error(f"Failed to set limit for resource: {what}") from None

    @staticmethod
    def _private_mounts() -> None:
        """A mount namespace of its own, receiving the host's mounts but sending none."""
        try:
            _libc_call("unshare", _CLONE_NEWNS)
        except OSError as exc:
            raise jailer_error(
                f"Failed to unshare into new mount namespace: {os_error(exc)}"
            ) from None
        try:
            _libc_call("mount", None, b"/", None, ctypes.c_ulong(_MS_SLAVE | _MS_REC), None)
        except OSError as exc:
            raise jailer_error(f"Failed to make / a slave mount: {os_error(exc)}") from None

    def _own_dir(self, inside: str) -> None:
        path = os.path.join(self.root, inside)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o700)
        except OSError as exc:
            raise jailer_error(f"Failed to create /{inside} in the jail: {os_error(exc)}") from None

    @staticmethod
    def _daemonize() -> None:
        try:
            null = os.open("/dev/null", os.O_RDWR)
        except OSError as exc:
            raise jailer_error(f"Failed to open /dev/null: {os_error(exc)}") from None
        try:
            os.setsid()
        except OSError as exc:
            raise jailer_error(f"Failed to daemonize: setsid: {os_error(exc)}") from None
        for fd in (0, 1, 2):
            try:
                os.dup2(null, fd)
            except OSError as exc:
                raise jailer_error(f"Failed to daemonize: dup2: {os_error(exc)}") from None
        os.close(null)

    def _exec(self, start_us: int, start_cpu_us: int, parent_cpu_us: int) -> NoReturn:
        argv = [
            f"/{self.exec_name}",
            "--emulate-chroot",
            self.root,
            "--emulate-user",
            f"{self.uid}:{self.gid}",
            "--id",
            self.vm_id,
            "--start-time-us",
            str(start_us),
            "--start-time-cpu-us",
            str(start_cpu_us),
            "--parent-cpu-time-us",
            str(parent_cpu_us),
            *self.firecracker_args,
        ]
        try:
            os.chdir(self.root)
            os.execve(os.path.join(self.root, self.exec_name), argv, _kept_environment())
        except OSError as exc:
            raise jailer_error(f"Failed to exec into Firecracker: {os_error(exc)}") from None


def process_cpu_us() -> int:
    return time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID) // 1000


def _kept_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("PYTHON") or name in _KEPT_ENV
    }
