"""From a :class:`~firec.vm.config.Config` to a running VMM process: paths, files, command line.

Nothing here talks to Firecracker's API. :func:`plan` works out everything
(pure) into a :class:`Launch`, which owns the VM's :class:`~firec.vm.layout.Layout`
(where each file is, on the host and for Firecracker); :func:`prepare` makes
the files (the VM's directory, the jail's contents, fifos, the config file),
:func:`spawn` starts the process, :func:`cleanup` removes it all.
:func:`api_calls` and :func:`config_file` (from ``_configure.py``) are what
configures the VM.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from firec.api.operations import MAX_PAYLOAD_FLAG
from firec.errors import ConfigError, MachineError
from firec.vm._configure import api_calls, config_file
from firec.vm.config import BootMethod, Config, runtime_dir, state_dir
from firec.vm.console import Console, ConsoleKind, open_vmm_input
from firec.vm.jailer import (
    DEFAULT_CHROOT_BASE,
    JailerMode,
    cgroup_dirs,
    jailer_argv,
    remove_cgroups,
)
from firec.vm.layout import JAILED_SOCKET_PATH, JailedLayout, Layout, PlainLayout
from firec.vm.vsock import remove_stale_socket

if TYPE_CHECKING:
    from firec.network import VMNetwork

__all__ = [
    "Launch",
    "api_calls",
    "attached",
    "brought_files",
    "cleanup",
    "config_file",
    "find_socket",
    "full_outputs",
    "output_files",
    "plan",
    "prepare",
    "spawn",
]

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one VMM, worked out from its config.

    Attributes:
        config: the config it comes from.
        layout: where each of the VM's files is, on the host and for
            Firecracker (:mod:`firec.vm.layout`); everything here asks it.
        vm_dir: firec's own directory for this VM (outside any jail): console,
            stderr, and for plain runs the socket and config file.
        socket_path: the API socket on the host.
        log_path: Firecracker's log (file or fifo) on the host.
        log_is_fifo: whether the log is a fifo firec reads.
        metrics_path: the metrics file or fifo on the host, if any.
        metrics_is_fifo: whether the metrics go to a fifo firec reads.
        console: where the serial console goes.
        console_path: the console file, when the console goes to a file.
        stderr_path: where Firecracker's standard error goes.
        config_file_path: the ``--config-file`` on the host, for config-file boots.
        metadata_path: the ``--metadata`` file on the host, when MMDS data is given.
        argv: the command line.
        cgroups: cgroup directories the jailer will create (removed on cleanup).
        enter_netns: the network namespace firec enters before starting
            Firecracker (the jailer enters one itself, by ``--netns``).
        new_session: start the VMM in a session of its own (not when the
            jailer daemonizes: its own setsid() would fail).
    """

    config: Config
    layout: Layout
    vm_dir: Path
    socket_path: Path
    log_path: Path
    log_is_fifo: bool
    metrics_path: Path | None
    metrics_is_fifo: bool
    console: Console
    console_path: Path | None
    stderr_path: Path
    config_file_path: Path | None
    metadata_path: Path | None
    argv: list[str] = field(default_factory=list)
    cgroups: tuple[Path, ...] = ()
    enter_netns: Path | None = None
    new_session: bool = True

    @property
    def jail(self) -> JailedLayout | None:
        """The :attr:`layout` when it is a jail, else ``None`` (for code written before it)."""
        return self.layout if isinstance(self.layout, JailedLayout) else None

    @property
    def vsock_path(self) -> Path | None:
        """The vsock device's Unix socket on the host (inside the jail when jailed), if any.

        Guest connections to host port ``P`` go to ``<vsock_path>_<P>``
        (:mod:`firec.vm.vsock`).
        """
        device = self.config.vsock
        if device is None:
            return None
        return self.layout.on_host(self.layout.seen(device.uds_path))

    def firec_files(self) -> list[Path]:
        """Files firec or the VMM make outside the VM directory and the jail.

        The API socket, the vsock socket and the fifos; log and metrics
        *files* the caller named are kept.
        """
        made = [self.socket_path]
        if self.vsock_path is not None:
            made.append(self.vsock_path)
        if self.log_is_fifo:
            made.append(self.log_path)
        if self.metrics_is_fifo and self.metrics_path is not None:
            made.append(self.metrics_path)
        if self.console.input is not None:
            made.append(self.console.input)
        inside = os.path.join(self.vm_dir, "")  # (is_relative_to: an exception per path outside)
        outside = [p for p in made if not os.path.join(p, "").startswith(inside)]
        return [p for p in outside if not self.layout.holds(p)]


#: Bytes free below which a filesystem counts as full for Firecracker's output
#: (a write can fail a few blocks before the last: reservations, metadata).
LOW_SPACE = 64 * 1024


def output_files(launch: Launch) -> list[tuple[str, Path]]:
    """The files the VMM itself writes, as ``(what, host path)``; fifos are not included.

    Firecracker writes them directly (the console through its standard
    output), ignoring write errors: on a full filesystem their output is
    silently lost, which :func:`full_outputs` finds.
    """
    files: list[tuple[str, Path]] = []
    if launch.console_path is not None:
        files.append(("the serial console", launch.console_path))
    serial = launch.config.serial
    if serial is not None and serial.serial_out_path is not None:
        path = launch.layout.on_host(launch.layout.seen(serial.serial_out_path))
        files.append(("the serial console", path))
    if not launch.log_is_fifo:
        files.append(("Firecracker's log", launch.log_path))
    if launch.metrics_path is not None and not launch.metrics_is_fifo:
        files.append(("Firecracker's metrics", launch.metrics_path))
    files.append(("Firecracker's standard error", launch.stderr_path))
    return files


def full_outputs(launch: Launch) -> list[tuple[str, Path, int]]:
    """The :func:`output_files` on a full filesystem: ``(what, path, bytes free)``.

    Full: less than :data:`LOW_SPACE` free for the VMM's user (the jail's
    uid, or this process's: root may use the blocks kept for it).
    """
    uid = launch.layout.vmm_uid
    full: list[tuple[str, Path, int]] = []
    for what, path in output_files(launch):
        try:
            st = os.statvfs(path if path.exists() else path.parent)
        except OSError:
            continue  # not made yet, or gone: nothing is written there
        free = (st.f_bfree if uid == 0 else st.f_bavail) * st.f_frsize
        if free < LOW_SPACE:
            full.append((what, path, free))
    return full


def plan(config: Config) -> Launch:
    """Work out paths and the command line of ``config``'s VMM."""
    layout = config.layout
    vm_dir = config.vm_dir
    log = config.log_fifo or config.log_path
    metrics = config.metrics_fifo or config.metrics_path
    console = config.console or Console.file(vm_dir / "console.log")
    file_boot = config.boot_method is BootMethod.CONFIG_FILE
    launch = Launch(
        config=config,
        layout=layout,
        vm_dir=vm_dir,
        socket_path=layout.on_host(config.api_socket_path),
        log_path=layout.on_host(log) if log is not None else layout.own_file("firecracker.log"),
        log_is_fifo=config.log_fifo is not None,
        metrics_path=layout.on_host(metrics) if metrics is not None else None,
        metrics_is_fifo=config.metrics_fifo is not None,
        console=console,
        console_path=console.path if console.kind is ConsoleKind.FILE else None,
        stderr_path=vm_dir / "firecracker.stderr",
        config_file_path=layout.own_file("config.json") if file_boot else None,
        metadata_path=(
            layout.own_file("metadata.json") if file_boot and config.mmds_data is not None else None
        ),
    )
    return dataclasses.replace(launch, **_command(launch))


def _command(launch: Launch) -> dict[str, Any]:
    """The command line: Firecracker's own, or the jailer's with Firecracker's after ``--``."""
    config = launch.config
    api_sock = ["--api-sock", config.api_socket_path]
    jailer = config.jailer
    if jailer is None:  # Firecracker itself: its own --id, and firec enters its namespace
        argv = [str(config.exec_file), *api_sock, "--id", config.vm_id]
        argv += [*_firecracker_args(launch), *config.extra_args]
        netns = netns_path(config.net_ns) if config.net_ns is not None else None
        return {"argv": argv, "enter_netns": netns}
    argv = jailer_argv(
        jailer,
        jailer_binary=config.jailer_binary,
        exec_file=config.exec_file,
        vm_id=config.vm_id,
        firecracker_args=[*api_sock, *_firecracker_args(launch)],
    )
    if config.net_ns is not None and jailer.netns is None:
        argv[1:1] = ["--netns", str(netns_path(config.net_ns))]
    return {
        "argv": argv,
        "cgroups": tuple(cgroup_dirs(jailer, config.vm_id, config.exec_file)),
        # the jailer's --daemonize calls setsid() itself, which a session leader may not
        "new_session": jailer.mode is not JailerMode.DAEMON,
    }


def attach_network(config: Config) -> tuple[Config, VMNetwork | None]:
    """Set up the network of ``config``'s interfaces that have a plan.

    Returns the config as the VMM must see it (taps with their MACs, the
    namespace to run in, the guest's ``ip=`` argument added to the kernel
    command line, the network document merged into the MMDS data) and the
    :class:`~firec.network.VMNetwork` to tear down after the VM, or ``config``
    and ``None`` when no interface has a plan. Nothing is left on failure.
    """
    if not any(i.network is not None for i in config.network_interfaces):
        return config, None
    if config.net_ns is not None:
        raise ConfigError("net_ns", "give either net_ns or interfaces with a network plan")
    from firec.network import BridgedNetwork, setup_network

    uid, gid = config.layout.owner or (None, None)  # the taps are for whom Firecracker runs as

    bridged = any(isinstance(i.network, BridgedNetwork) for i in config.network_interfaces)
    network = setup_network(
        config.vm_id,
        config.network_interfaces,
        state_dir=config.state_dir or state_dir(),
        netns=not bridged,  # a host bridge needs the taps on the host
        uid=uid,
        gid=gid,
    )
    try:
        ip_arg = network.kernel_ip_arg()
        mmds = config.mmds_data
        if config.mmds_config is not None:
            mmds = {**network.mmds(), **(config.mmds_data or {})}
        attached = config.replace(
            kernel_args=" ".join(a for a in (config.kernel_args, ip_arg) if a) or None,
            network_interfaces=tuple(a.interface for a in network.interfaces),
            net_ns=network.netns,
            mmds_data=mmds,
        )
    except BaseException:
        network.teardown()
        raise
    return attached, network


def attached(config: Config) -> Launch:
    """The launch facts of a VMM firec did not start: just its socket (see ``connect``)."""
    socket_path = config.host_socket_path
    return Launch(
        config=config,
        layout=PlainLayout(socket_path.parent),
        vm_dir=socket_path.parent,
        socket_path=socket_path,
        log_path=socket_path.parent / "firecracker.log",
        log_is_fifo=False,
        metrics_path=None,
        metrics_is_fifo=False,
        console=Console.discard(),
        console_path=None,
        stderr_path=socket_path.parent / "firecracker.stderr",
        config_file_path=None,
        metadata_path=None,
    )


def socket_accepts(path: str | os.PathLike[str]) -> bool | None:
    """Whether the Unix socket at ``path`` takes connections now; None if it does not exist yet.

    False while the VMM has bound it but not yet listens. Never blocks: one
    ``connect``, closed at once.
    """
    try:  # nothing there yet (a claim, a VMM starting): no socket to make
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        pass  # connect() says what it is
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        probe.connect(os.fspath(path))
    except BlockingIOError:
        return True  # listening, its backlog full for a moment
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return False  # refused (bound, not listening yet) or not a socket
    finally:
        probe.close()
    return True


def find_socket(target: str | os.PathLike[str]) -> Path:
    """The API socket of ``target``: a socket path, or the id of a VM firec started."""
    path = Path(target)
    if path.is_socket() or os.sep in os.fspath(target):
        return path
    candidates = [runtime_dir() / path.name / "firecracker.socket"]
    candidates += sorted(DEFAULT_CHROOT_BASE.glob(f"*/{path.name}/root{JAILED_SOCKET_PATH}"))
    for candidate in candidates:
        if candidate.is_socket():
            return candidate
    raise MachineError(
        f"no running microVM {path.name}: no API socket at "
        + " or ".join(str(c) for c in candidates[:2])
    )


def _firecracker_args(launch: Launch) -> list[str]:
    """Firecracker's arguments after ``--api-sock`` (and, plainly, ``--id``)."""
    config, layout = launch.config, launch.layout
    args = ["--log-path", layout.seen(launch.log_path)]
    if config.log_level is not None:
        args += ["--level", config.log_level.value]
    if config.log_show_level:
        args.append("--show-level")
    if config.log_show_origin:
        args.append("--show-log-origin")
    if launch.config_file_path is not None:
        args += ["--config-file", layout.seen(launch.config_file_path)]
    if launch.metadata_path is not None:
        args += ["--metadata", layout.seen(launch.metadata_path)]
    if config.http_api_max_payload_size is not None:
        args += [MAX_PAYLOAD_FLAG, str(config.http_api_max_payload_size)]
    return args


def netns_path(name_or_path: str) -> Path:
    """The path of a network namespace given by name (``/var/run/netns/<name>``) or path."""
    return Path(name_or_path) if "/" in name_or_path else Path("/var/run/netns") / name_or_path


def brought_files(config: Config) -> list[tuple[str, Path, bool]]:
    """Every host file the VM uses: ``(config field, path, whether Firecracker writes it)``.

    Writable: the drives and pmem devices not marked read-only. See
    :meth:`firec.vm.layout.Layout.bring_in` for how each gets to Firecracker.
    """
    drives = config.drives
    writable = {Path(d.path_on_host) for d in drives if d.path_on_host and not d.is_read_only}
    writable |= {Path(p.path_on_host) for p in config.pmem if not p.read_only}
    return [(name, path, path in writable) for name, path in config.input_files()]


def prepare(launch: Launch) -> None:
    """Make the VM's directory, bring its files in, make fifos and the config file.

    A file that cannot be brought in is refused before anything is made.
    Everything made here is removed by :func:`cleanup`.
    """
    config, layout = launch.config, launch.layout
    brought = brought_files(config)
    for field_name, path, writable in brought:
        layout.check_bring_in(path, writable=writable, field=field_name)
    launch.vm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.make_root()
    for field_name, path, writable in brought:
        layout.bring_in(path, writable=writable, field=field_name)
    layout.make_dirs(Path(config.api_socket_path).parent)
    if config.vsock is not None and launch.vsock_path is not None:
        layout.make_own_dirs(Path(layout.seen(config.vsock.uds_path)).parent)
        remove_stale_socket(launch.vsock_path)  # Firecracker will not bind over it
    layout.make_output(launch.log_path, fifo=launch.log_is_fifo)
    if launch.metrics_path is not None:
        layout.make_output(launch.metrics_path, fifo=launch.metrics_is_fifo)
    if launch.config_file_path is not None:
        layout.write_file(launch.config_file_path, json.dumps(config_file(launch)))
    if launch.metadata_path is not None and config.mmds_data is not None:
        layout.write_file(launch.metadata_path, json.dumps(dict(config.mmds_data)))


def console_pipe(launch: Launch) -> tuple[int, int] | None:
    """The pipe the VMM's console goes through to a callback, ``(read end, write end)``.

    ``None`` unless the console goes to a callback. Made before the VMM, so
    that its reader runs before the VMM does (see :func:`spawn`).
    """
    if launch.console.kind is not ConsoleKind.CALLBACK:
        return None
    return os.pipe2(os.O_CLOEXEC)


def spawn(launch: Launch, console_out: int | None = None) -> subprocess.Popen[bytes]:
    """Start the VMM process.

    ``console_out``: the write end of the :func:`console_pipe`, when the
    console goes to a callback (the caller still owns it and closes it).
    """
    console = launch.console
    stdout: Any
    # the serial console reads Firecracker's stdin: an input fifo, the terminal's, or nothing
    input_fd = open_vmm_input(console)
    opened: list[IO[bytes]] = [] if input_fd is None else [os.fdopen(input_fd, "rb", buffering=0)]
    stdin: Any = opened[0] if opened else None
    if stdin is None and console.kind is not ConsoleKind.TERMINAL:
        stdin = subprocess.DEVNULL
    if console.kind is ConsoleKind.FILE:
        assert console.path is not None
        console.path.parent.mkdir(parents=True, exist_ok=True)
        stdout = open(console.path, "ab")  # noqa: SIM115 - handed to the child, closed below
        opened.append(stdout)
    elif console.kind is ConsoleKind.CALLBACK:
        assert console_out is not None, "a callback console's pipe (console_pipe)"
        stdout = console_out
    elif console.kind is ConsoleKind.TERMINAL:
        stdout = None
    else:
        stdout = subprocess.DEVNULL
    stderr = open(launch.stderr_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    opened.append(stderr)
    preexec = None
    netns_fd: int | None = None
    path = launch.enter_netns
    if path is not None:
        try:
            netns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MachineError(f"cannot open network namespace {path}: {exc.strerror}") from exc
        preexec = _setns_into(netns_fd)
    try:
        process = subprocess.Popen(
            launch.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=launch.vm_dir,
            preexec_fn=preexec,
            # a session of its own, so that the VM outlives a Ctrl-C to its controller
            start_new_session=launch.new_session,
        )
    except OSError as exc:
        raise MachineError(f"cannot start {launch.argv[0]}: {exc.strerror}") from exc
    finally:
        for handle in opened:
            handle.close()
        if netns_fd is not None:
            os.close(netns_fd)
    return process


def _setns_into(fd: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the network namespace failed")

    return enter


def cleanup(launch: Launch) -> list[str]:
    """Remove everything :func:`prepare` and the VMM made; return what could not be removed.

    The VM directory, the jail (chroot tree), the cgroups the jailer made,
    and for plain runs the socket, log and metrics files placed elsewhere.
    """
    import shutil

    left: list[str] = []
    for path in launch.firec_files():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"{path}: {exc.strerror}")
    left += launch.layout.remove()
    left += remove_cgroups(launch.cgroups)
    shutil.rmtree(launch.vm_dir, ignore_errors=True)
    if launch.vm_dir.exists():
        left.append(f"{launch.vm_dir}: could not be removed")
    return left
