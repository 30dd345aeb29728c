"""An emulated Firecracker jailer (as jailer v1.0.0 behaves) for firec's Firecracker emulator.

Run it as ``python -m firec.testing.jailer`` or ``firec-jailer-emulator`` (or
through :func:`firec.testing.binaries.jailer_emulator_binary`) with the real
jailer's command line and firec's emulator as ``--exec-file``::

    python -m firec.testing.jailer --id vm-1 --exec-file "$(firec-emulator-path)" \\
        --uid 1234 --gid 1234 --chroot-base-dir /srv/jailer --cgroup cpu.shares=100 \\
        -- --api-sock /run/firecracker.socket

It takes the same flags and refuses the same values with the same messages
and exit statuses (argument errors: exit 1 and a message on stdout; every
other error: a Rust-style panic on stderr and SIGABRT). Everything the real
jailer does that needs no chroot is done for real, in the real order:

* the jail ``<chroot base>/<exec file name>/<id>/root`` is made and the exec
  file copied in; ``/``, ``/dev``, ``/dev/net`` and ``/run`` of the jail are
  owned by ``--uid``/``--gid``, mode 0700 (no device nodes are made: the
  emulator needs none, but a jail that already holds the exec file is refused
  as the real jailer refuses it, when ``mknod`` of ``/dev/net/tun`` fails);
* cgroups (v1: ``<controller mount>/<parent>/<id>``, values inherited from
  the parent as the jailer does, the process in ``tasks``; v2: under the
  cgroup2 mount, controllers enabled in the parents' ``cgroup.subtree_control``),
  ``--netns`` (setns), resource limits (default ``no-file=2048``), a private
  mount namespace, ``--daemonize`` (setsid, stdio to ``/dev/null``) and
  ``--new-pid-ns`` (the exec file runs as pid 1 of a new PID namespace, its
  host pid in ``<root>/<exec file name>.pid``, the jailer exits 0);
* inherited file descriptors above 2 are closed and the environment cleared
  (but for ``PYTHON*``, ``LD_LIBRARY_PATH`` and ``FIREC_EMULATOR_VERSION``,
  which the emulator needs to start).

Then, instead of chrooting and switching user, it execs the copy of the exec
file in the jail, from the jail as working directory, with the arguments the
real jailer gives (``--id``, ``--start-time-us``, ``--start-time-cpu-us``,
``--parent-cpu-time-us``, then those after ``--``) preceded by the emulator's
``--emulate-chroot <root> --emulate-user <uid>:<gid>`` (see
:mod:`firec.testing.emulator._jail`): the emulator resolves every path inside
the jail and drops to the jail's user itself, once its interpreter has
loaded (which the jail's user may be unable to read). So the exec file must
be firec's emulator; real Firecracker refuses those flags.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["VERSION", "formatted_help", "main", "parse_args"]

VERSION = "1.0.0"
"""The jailer release this emulates."""

DEFAULT_CHROOT_BASE = "/srv/jailer"
DEFAULT_NO_FILE = 2048
_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19
_KEPT_ENV = ("FIREC_EMULATOR_VERSION", "LD_LIBRARY_PATH")
_UINT = re.compile(r"\+?[0-9]+")

# name: (takes a value, required, repeatable, default, help)
_ARGS: dict[str, tuple[bool, bool, bool, str | None, str]] = {
    "id": (True, True, False, None, "Jail ID."),
    "exec-file": (True, True, False, None, "File path to exec into."),
    "uid": (
        True,
        True,
        False,
        None,
        "The user identifier the jailer switches to after exec.",
    ),
    "gid": (
        True,
        True,
        False,
        None,
        "The group identifier the jailer switches to after exec.",
    ),
    "chroot-base-dir": (
        True,
        False,
        False,
        DEFAULT_CHROOT_BASE,
        "The base folder where chroot jails are located.",
    ),
    "netns": (
        True,
        False,
        False,
        None,
        "Path to the network namespace this microVM should join.",
    ),
    "daemonize": (
        False,
        False,
        False,
        None,
        "Daemonize the jailer before exec, by invoking setsid(), and redirecting the standard "
        "I/O file descriptors to /dev/null.",
    ),
    "new-pid-ns": (False, False, False, None, "Exec into a new PID namespace."),
    "cgroup": (
        True,
        False,
        True,
        None,
        "Cgroup and value to be set by the jailer. It must follow this format: "
        "<cgroup_file>=<value> (e.g cpu.shares=10). This argument can be used multiple times "
        "to add multiple cgroups.",
    ),
    "cgroup-version": (
        True,
        False,
        False,
        "1",
        "Select the cgroup version used by the jailer.",
    ),
    "parent-cgroup": (
        True,
        False,
        False,
        None,
        "Parent cgroup in which the cgroup of this microvm will be placed.",
    ),
    "resource-limit": (
        True,
        False,
        True,
        None,
        "Resource limit values to be set by the jailer. It must follow this format: "
        "<resource>=<value> (e.g no-file=1024). This argument can be used multiple times to "
        "add multiple resource limits. Current available resource values are:\n"
        "\t\tfsize: The maximum size in bytes for files created by the process.\n"
        "\t\tno-file: Specifies a value one greater than the maximum file descriptor number "
        "that can be opened by this process.",
    ),
    "help": (False, False, False, None, "Show the help message."),
    "version": (False, False, False, None, "Print the binary version number."),
}

# --resource-limit name: (rlimit, what a failure calls it)
_RESOURCES = {
    "fsize": (resource.RLIMIT_FSIZE, "file size"),
    "no-file": (resource.RLIMIT_NOFILE, "number of file descriptors"),
}

# errno -> std::io::ErrorKind as the Rust of jailer v1.0.0 names it
_ERROR_KINDS = {
    1: "PermissionDenied",
    2: "NotFound",
    4: "Interrupted",
    11: "WouldBlock",
    13: "PermissionDenied",
    17: "AlreadyExists",
    22: "InvalidInput",
    32: "BrokenPipe",
}


class _ArgError(Exception):
    """A command line the jailer's argument parser refuses."""


class _Panic(Exception):
    """The jailer panics: ``text`` at ``where``."""

    def __init__(self, text: str, where: str = "src/jailer/src/main.rs:435:27") -> None:
        super().__init__(text)
        self.text = text
        self.where = where

    def die(self) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.write(
            f"thread 'main' panicked at '{self.text}', {self.where}\n"
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
        )
        sys.stderr.flush()
        os.abort()


def _jailer_error(message: str) -> _Panic:
    return _Panic(f"Jailer error: {message}")


def _io(exc: OSError) -> str:
    """An OS error as Rust displays it: ``No such file or directory (os error 2)``."""
    code = exc.errno or 0
    return f"{os.strerror(code)} (os error {code})"


def _io_debug(exc: OSError) -> str:
    code = exc.errno or 0
    kind = _ERROR_KINDS.get(code, "Other")
    return f'Os {{ code: {code}, kind: {kind}, message: "{os.strerror(code)}" }}'


def _unwrap(error: str, path: str, exc: OSError, where: str) -> _Panic:
    """The panic of ``.unwrap()`` on a cgroup error ``error(path, exc)``."""
    return _Panic(
        f'called `Result::unwrap()` on an `Err` value: {error}("{path}", {_io_debug(exc)})', where
    )


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# -- the command line ---------------------------------------------------------------------


def formatted_help() -> str:
    """What ``--help`` prints."""

    def section(title: str, names: list[str]) -> list[str]:
        usage = {n: f"  --{n} <{n}>" if _ARGS[n][0] else f"  --{n}" for n in names}
        width = max(len(u) for u in usage.values())
        lines = [title]
        for n in names:
            text = _ARGS[n][4]
            if _ARGS[n][3] is not None:
                text += f' [default: "{_ARGS[n][3]}"]'
            lines.append(f"{usage[n]:<{width}}   {text}")
        return lines

    required = sorted(n for n, spec in _ARGS.items() if spec[1])
    optional = sorted(n for n, spec in _ARGS.items() if not spec[1])
    lines = [
        f"Jailer v{VERSION}",
        "",
        *section("required arguments:", required),
        "",
        *section("optional arguments:", optional),
        "",
        "Any arguments after the -- separator will be supplied to the jailed binary.",
        "",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str | list[str] | bool], list[str]]:
    """The jailer's arguments (defaults filled in) and those after ``--``; raises _ArgError."""
    args = list(argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    if "--help" in args:
        return {"help": True}, extra
    if "--version" in args:
        return {"version": True}, extra
    values: dict[str, str | list[str] | bool] = {}
    words = iter(args)
    for word in words:
        if not word.startswith("--"):
            raise _ArgError(
                f"Found argument '{word}' which wasn't expected, or isn't valid in this context."
            )
        name = word[2:]
        if name not in _ARGS:
            raise _ArgError(
                f"Found argument '{name}' which wasn't expected, or isn't valid in this context."
            )
        takes_value, _, repeatable, _, _ = _ARGS[name]
        if name in values and not repeatable:
            raise _ArgError(f"The argument '{name}' was provided more than once.")
        value: str | bool = True
        if takes_value:
            given = next(words, None)
            if given is None or given.startswith("--"):
                raise _ArgError(f"The argument '{name}' requires a value, but none was supplied.")
            value = given
        if repeatable:
            previous = values.setdefault(name, [])
            assert isinstance(previous, list)
            previous.append(str(value))
            continue
        values[name] = value
    for name in sorted(_ARGS):
        if _ARGS[name][1] and name not in values:
            raise _ArgError(f"Argument '{name}' required, but not found.")
    for name, (_, _, _, default, _) in _ARGS.items():
        if default is not None:
            values.setdefault(name, default)
    return values, extra


def _parse_uint(text: str, bits: int) -> tuple[int | None, str]:
    """Rust's ``u<bits>::from_str``: the number, or None and the error text."""
    if not text:
        return None, "cannot parse integer from empty string"
    if not _UINT.fullmatch(text):
        return None, "invalid digit found in string"
    number = int(text)
    if number >= 1 << bits:
        return None, "number too large to fit in target type"
    return number, ""


# -- cgroups ------------------------------------------------------------------------------


def _bad_components(path: str) -> bool:
    """Whether ``path`` has a root, ``.`` or ``..`` component (as Rust's ``Path`` sees them)."""
    return path.startswith("/") or path == "." or path.startswith("./") or ".." in path.split("/")


def _mounts(fstype: str) -> list[tuple[str, list[str]]]:
    """Mount points of ``fstype`` with their options, from ``/proc/mounts``."""
    found = []
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == fstype:
                found.append((fields[1].replace("\\040", " "), fields[3].split(",")))
    return found


def _controller_mount(controller: str, version: int) -> str | None:
    """Where ``controller``'s hierarchy is mounted, or None when it is unavailable."""
    if version == 1:
        return next((point for point, opts in _mounts("cgroup") if controller in opts), None)
    for point, _ in _mounts("cgroup2")[:1]:
        try:
            with open(os.path.join(point, "cgroup.controllers"), encoding="utf-8") as f:
                available = f.read().split()
        except OSError:
            return None
        return point if controller in available else None
    return None


def _read_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except OSError as exc:
        raise _unwrap("ReadToString", path, exc, "src/jailer/src/env.rs:520:34") from None


def _write_line(path: str, text: str, where: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, f"{text}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise _unwrap("Write", path, exc, where) from None


@dataclass(frozen=True)
class _Cgroup:
    """One ``--cgroup <file>=<value>`` of a VM: where it goes and how it is set."""

    version: int
    controller: str
    file: str
    value: str
    directory: str

    def write_value(self) -> None:
        where = "src/jailer/src/env.rs:520:34"
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise _unwrap("CreateDir", self.directory, exc, where) from None
        if self.version == 1:
            self._inherit(self.directory)
        else:
            self._enable_in_parents()
        _write_line(os.path.join(self.directory, self.file), self.value, where)

    def _inherit(self, directory: str) -> None:
        """v1: copy the file's value down from the nearest ancestor where it is set."""
        parent_file = os.path.join(os.path.dirname(directory), self.file)
        line = _read_line(parent_file)
        if not line:
            self._inherit(os.path.dirname(directory))
            line = _read_line(parent_file)
        _write_line(os.path.join(directory, self.file), line, "src/jailer/src/env.rs:520:34")

    def _enable_in_parents(self) -> None:
        """v2: ``+<controller>`` in the ``cgroup.subtree_control`` of every parent."""
        parents = []
        directory = os.path.dirname(self.directory)
        while os.path.exists(os.path.join(directory, "cgroup.subtree_control")):
            parents.append(directory)
            if directory == os.path.dirname(directory):
                break
            directory = os.path.dirname(directory)
        for parent in reversed(parents):
            _write_line(
                os.path.join(parent, "cgroup.subtree_control"),
                f"+{self.controller}",
                "src/jailer/src/env.rs:520:34",
            )

    def attach(self, pid: int) -> None:
        name = "tasks" if self.version == 1 else "cgroup.procs"
        _write_line(os.path.join(self.directory, name), str(pid), "src/jailer/src/env.rs:525:33")


def _cgroups(specs: list[str], version_text: str, vm_id: str, parent: str) -> list[_Cgroup]:
    """The ``--cgroup`` values, checked as the jailer checks them; raises _Panic."""
    version, _ = _parse_uint(version_text, 8)
    if version is None:
        raise _jailer_error(f"{version_text} is an invalid cgroup version specifier")
    if not specs:
        return []
    if version not in (1, 2):
        raise _jailer_error(f"{version_text} is an invalid cgroup version specifier")
    cgroups = []
    for spec in specs:
        parts = spec.split("=")
        if len(parts) != 2 or not parts[1]:
            raise _jailer_error(f"Invalid format for cgroups: {spec}")
        file, value = parts
        if _bad_components(file):
            raise _jailer_error(f"Cgroup invalid file: {spec}")
        if "." not in file:
            raise _jailer_error(f"Cgroup invalid file: {file}")
        controller = file.split(".", 1)[0]
        mount = _controller_mount(controller, version)
        if mount is None:
            raise _jailer_error(f"Controller {controller} is unavailable")
        directory = os.path.join(mount, parent, vm_id)
        cgroups.append(_Cgroup(version, controller, file, value, directory))
    return cgroups


# -- the jail -------------------------------------------------------------------------------


def _canonical(given: str) -> str:
    try:
        if not given:
            raise FileNotFoundError(2, os.strerror(2))
        return os.path.realpath(given, strict=True)
    except OSError as exc:
        raise _jailer_error(f"Failed to canonicalize path {given}: {_io(exc)}") from None


def _validate_id(vm_id: str) -> None:
    size = len(vm_id.encode())
    if not 1 <= size <= 64:
        raise _jailer_error(
            f"Invalid instance ID: invalid len ({size});  the length must be between 1 and 64"
        )
    for position, char in enumerate(vm_id):
        if not (char.isalnum() or char == "-"):
            raise _jailer_error(
                f"Invalid instance ID: invalid char ({char}) at position {position}"
            )


def _resource_limits(specs: list[str]) -> dict[str, int]:
    limits = {"fsize": resource.RLIM_INFINITY, "no-file": DEFAULT_NO_FILE}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep:
            raise _jailer_error(f"Invalid format for resources limits: {spec}")
        value, problem = _parse_uint(text, 64)
        if value is None:
            raise _jailer_error(f"Invalid limit value for resource: {text}: {problem}")
        if name not in _RESOURCES:
            raise _jailer_error(f"Invalid resource argument: {name}")
        limits[name] = value if value < 1 << 63 else resource.RLIM_INFINITY
    return limits


@dataclass(frozen=True)
class _Jail:
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
    cgroups: list[_Cgroup]
    limits: dict[str, int]
    firecracker_args: list[str]

    @classmethod
    def from_args(cls, args: dict[str, str | list[str] | bool], extra: list[str]) -> _Jail:
        """Check the arguments in the jailer's order; raises _Panic."""
        vm_id = str(args["id"])
        _validate_id(vm_id)
        exec_file = _canonical(str(args["exec-file"]))
        if not os.path.isfile(exec_file):
            raise _jailer_error(f"{exec_file} is not a file")
        exec_name = os.path.basename(exec_file)
        base = _canonical(str(args["chroot-base-dir"]))
        if not os.path.isdir(base):
            raise _jailer_error(f"{base} is not a directory")
        ids = {}
        for name in ("uid", "gid"):
            number, _ = _parse_uint(str(args[name]), 32)
            if number is None:
                raise _jailer_error(f"Invalid {name}: {args[name]}")
            ids[name] = number
        parent = str(args.get("parent-cgroup", exec_name))
        if _bad_components(parent):
            raise _jailer_error(
                "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
            )
        specs = args.get("cgroup", [])
        assert isinstance(specs, list)
        cgroups = _cgroups(specs, str(args["cgroup-version"]), vm_id, parent)
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
        """Set everything up and exec the exec file; raises _Panic."""
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
            raise _jailer_error(
                # the jailer prints the C string of the path, NUL byte included
                "Failed to create /dev/net/tun\x00 via mknod inside the jail: "
                + _io(FileExistsError(17, os.strerror(17)))
            )
        if self.daemonize:
            self._daemonize()
        cpu_us = _cpu_us() - start_cpu_us
        if not self.new_pid_ns:
            self._exec(start_us, start_cpu_us, 0)
        try:
            _libc_call("unshare", _CLONE_NEWPID)
            child = os.fork()
        except OSError as exc:
            raise _jailer_error(f"Failed to exec into new PID namespace: {_io(exc)}") from None
        if child == 0:
            try:
                self._exec(start_us, 0, cpu_us)
            except _Panic as panic:
                panic.die()
        try:
            with open(self.pidfile, "w", encoding="ascii") as pidfile:
                pidfile.write(str(child))
        except OSError as exc:
            raise _jailer_error(f"Failed to write PID file {self.pidfile}: {_io(exc)}") from None
        os._exit(0)

    def _copy_exec_file(self) -> bool:
        """Make the jail directory and copy the exec file in; whether it was there already."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise _jailer_error(f"Failed to create directory {self.root}: {_io(exc)}") from None
        target = os.path.join(self.root, self.exec_name)
        there = os.path.lexists(target)
        try:
            shutil.copyfile(self.exec_file, target)
            shutil.copymode(self.exec_file, target)
        except OSError as exc:
            raise _jailer_error(
                f"Failed to copy {self.exec_file} to {target}: {_io(exc)}"
            ) from None
        return there

    @staticmethod
    def _join_netns(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _jailer_error(f"Failed to open file {path}: {_io(exc)}") from None
        try:
            _libc_call("setns", fd, _CLONE_NEWNET)
        except OSError as exc:
            raise _jailer_error(f"Failed to join network namespace: netns: {_io(exc)}") from None
        finally:
            os.close(fd)

    def _set_limits(self) -> None:
        for name in ("fsize", "no-file"):
            limit, what = _RESOURCES[name]
            value = self.limits[name]
            try:
                resource.setrlimit(limit, (value, value))
            except (OSError, ValueError):
                raise _jailer_error(f"Failed to set limit for resource: {what}") from None

    @staticmethod
    def _private_mounts() -> None:
        """A mount namespace of its own, receiving the host's mounts but sending none."""
        try:
            _libc_call("unshare", _CLONE_NEWNS)
        except OSError as exc:
            raise _jailer_error(f"Failed to unshare into new mount namespace: {_io(exc)}") from None
        try:
            _libc_call("mount", None, b"/", None, ctypes.c_ulong(_MS_SLAVE | _MS_REC), None)
        except OSError as exc:
            raise _jailer_error(f"Failed to make / a slave mount: {_io(exc)}") from None

    def _own_dir(self, inside: str) -> None:
        path = os.path.join(self.root, inside)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, 0o700)
        except OSError as exc:
            raise _jailer_error(f"Failed to create /{inside} in the jail: {_io(exc)}") from None

    @staticmethod
    def _daemonize() -> None:
        try:
            null = os.open("/dev/null", os.O_RDWR)
        except OSError as exc:
            raise _jailer_error(f"Failed to open /dev/null: {_io(exc)}") from None
        try:
            os.setsid()
        except OSError as exc:
            raise _jailer_error(f"Failed to daemonize: setsid: {_io(exc)}") from None
        for fd in (0, 1, 2):
            try:
                os.dup2(null, fd)
            except OSError as exc:
                raise _jailer_error(f"Failed to daemonize: dup2: {_io(exc)}") from None
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
            raise _jailer_error(f"Failed to exec into Firecracker: {_io(exc)}") from None


# -- the process ----------------------------------------------------------------------------


def _cpu_us() -> int:
    return time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID) // 1000


def _kept_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("PYTHON") or name in _KEPT_ENV
    }


def _close_inherited_fds() -> None:
    for entry in os.listdir("/proc/self/fd"):
        if int(entry) > 2:
            with contextlib.suppress(OSError):
                os.close(int(entry))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the jailer emulator with the jailer's command line (console entry point)."""
    start_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    start_cpu_us = _cpu_us()
    _close_inherited_fds()
    try:
        args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    except _ArgError as exc:
        sys.stdout.write(f"Arguments parsing error: {exc} \n\nFor more information try --help.\n")
        sys.stdout.flush()
        os._exit(1)
    if args.get("help"):
        sys.stdout.write(formatted_help())
        sys.stdout.flush()
        os._exit(0)
    if args.get("version"):
        sys.stdout.write(f"Jailer v{VERSION}\n\n")
        sys.stdout.flush()
        os._exit(0)
    try:
        _Jail.from_args(args, extra).run(start_us, start_cpu_us)
    except _Panic as panic:
        panic.die()


if __name__ == "__main__":
    main()
