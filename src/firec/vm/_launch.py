"""From a :class:`~firec.vm.config.Config` to a running VMM process: paths, files, command line.

Nothing here talks to Firecracker's API. :func:`plan` works out everything
(pure), :func:`prepare` makes the files (the VM's directory, the jail's
contents, fifos, the config file), :func:`spawn` starts the process.
:func:`api_calls` lists the API requests that configure the VM, in the order
Firecracker needs them, and :func:`config_file` the same as one
``--config-file`` document.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from firec.api import models
from firec.api.operations import MAX_PAYLOAD_FLAG
from firec.errors import ConfigError, MachineError
from firec.vm.config import JAILED_SOCKET_PATH, BootMethod, Config, runtime_dir, state_dir
from firec.vm.console import Console, ConsoleKind
from firec.vm.jailer import (
    DEFAULT_CHROOT_BASE,
    Jail,
    JailerMode,
    cgroup_dirs,
    jailer_argv,
    remove_cgroups,
)
from firec.vm.vsock import remove_stale_socket

if TYPE_CHECKING:
    from firec.network import VMNetwork

__all__ = [
    "Launch",
    "api_calls",
    "attached",
    "cleanup",
    "config_file",
    "find_socket",
    "full_outputs",
    "jailed_files",
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
        jail: the jail, when jailed.
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
    """

    config: Config
    jail: Jail | None
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

    def seen(self, host_path: Path) -> str:
        """``host_path`` as Firecracker sees it (inside the jail when jailed)."""
        if self.jail is None:
            return str(host_path)
        return "/" + str(host_path.relative_to(self.jail.root))

    @property
    def vsock_path(self) -> Path | None:
        """The vsock device's Unix socket on the host (inside the jail when jailed), if any.

        Guest connections to host port ``P`` go to ``<vsock_path>_<P>``
        (:mod:`firec.vm.vsock`).
        """
        device = self.config.vsock
        if device is None:
            return None
        if self.jail is not None:
            return self.jail.on_host(self.jail.inside(device.uds_path))
        path = Path(device.uds_path)
        return path if path.is_absolute() else self.vm_dir / path  # the VMM runs in vm_dir

    def firec_files(self) -> list[Path]:
        """Files firec or the VMM make outside the VM directory and the jail.

        The API socket, the vsock socket and the fifos; log and metrics
        *files* the caller named are kept.
        """
        if self.jail is not None:
            return []
        made = [self.socket_path]
        if self.vsock_path is not None:
            made.append(self.vsock_path)
        if self.log_is_fifo:
            made.append(self.log_path)
        if self.metrics_is_fifo and self.metrics_path is not None:
            made.append(self.metrics_path)
        return [p for p in made if not p.is_relative_to(self.vm_dir)]


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
        path = Path(serial.serial_out_path)
        if launch.jail is not None:
            path = launch.jail.on_host(launch.jail.inside(path))
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
    uid = launch.jail.uid if launch.jail is not None else os.geteuid()
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
    jail = config.jail
    vm_dir = config.vm_dir
    if jail is not None:
        where = jail.on_host
        log_path = where(str(config.log_fifo or config.log_path or "/firecracker.log"))
        metrics = config.metrics_fifo or config.metrics_path
        metrics_path = where(str(metrics)) if metrics is not None else None
    else:
        log_path = config.log_fifo or config.log_path or vm_dir / "firecracker.log"
        metrics_path = config.metrics_fifo or config.metrics_path
    console = config.console or Console.file(vm_dir / "console.log")
    config_path = vm_dir / "config.json" if config.boot_method is BootMethod.CONFIG_FILE else None
    metadata_path = vm_dir / "metadata.json" if config.mmds_data is not None else None
    if jail is not None:
        config_path = jail.root / "config.json" if config_path else None
        metadata_path = jail.root / "metadata.json" if metadata_path else None
    launch = Launch(
        config=config,
        jail=jail,
        vm_dir=vm_dir,
        socket_path=config.host_socket_path,
        log_path=log_path,
        log_is_fifo=config.log_fifo is not None,
        metrics_path=metrics_path,
        metrics_is_fifo=config.metrics_fifo is not None,
        console=console,
        console_path=console.path if console.kind is ConsoleKind.FILE else None,
        stderr_path=vm_dir / "firecracker.stderr",
        config_file_path=config_path,
        metadata_path=metadata_path if config.boot_method is BootMethod.CONFIG_FILE else None,
    )
    argv = _firecracker_args(launch)
    cgroups: tuple[Path, ...] = ()
    if config.jailer is not None:
        argv = jailer_argv(
            config.jailer,
            jailer_binary=config.jailer_binary,
            exec_file=config.exec_file,
            vm_id=config.vm_id,
            firecracker_args=argv,
        )
        cgroups = tuple(cgroup_dirs(config.jailer, config.vm_id, config.exec_file))
        if config.net_ns is not None and config.jailer.netns is None:
            jailer_netns = ["--netns", str(netns_path(config.net_ns))]
            argv[1:1] = jailer_netns
    else:
        argv = [str(config.exec_file), *argv]
    return Launch(**{**launch.__dict__, "argv": argv, "cgroups": cgroups})


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
    from firec.network import setup_network

    owner = config.jailer
    from firec.network import BridgedNetwork

    bridged = any(isinstance(i.network, BridgedNetwork) for i in config.network_interfaces)
    network = setup_network(
        config.vm_id,
        config.network_interfaces,
        state_dir=config.state_dir or state_dir(),
        netns=not bridged,  # a host bridge needs the taps on the host
        uid=owner.uid if owner else None,
        gid=owner.gid if owner else None,
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
        jail=None,
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


def socket_accepts(path: Path) -> bool | None:
    """Whether the Unix socket at ``path`` takes connections now; None if it does not exist yet.

    False while the VMM has bound it but not yet listens. Never blocks: one
    ``connect``, closed at once.
    """
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
    config = launch.config
    args = ["--api-sock", config.api_socket_path]
    if config.jailer is None:
        args += ["--id", config.vm_id]  # the jailer passes its own --id
    args += ["--log-path", launch.seen(launch.log_path)]
    if config.log_level is not None:
        args += ["--level", config.log_level.value]
    if config.log_show_level:
        args.append("--show-level")
    if config.log_show_origin:
        args.append("--show-log-origin")
    if launch.config_file_path is not None:
        args += ["--config-file", launch.seen(launch.config_file_path)]
    if launch.metadata_path is not None:
        args += ["--metadata", launch.seen(launch.metadata_path)]
    if config.http_api_max_payload_size is not None:
        args += [MAX_PAYLOAD_FLAG, str(config.http_api_max_payload_size)]
    if config.jailer is None:
        args += list(config.extra_args)
    return args


def netns_path(name_or_path: str) -> Path:
    """The path of a network namespace given by name (``/var/run/netns/<name>``) or path."""
    return Path(name_or_path) if "/" in name_or_path else Path("/var/run/netns") / name_or_path


def _seen_path(launch: Launch, host_path: str | None) -> str | None:
    if host_path is None:
        return None
    if launch.jail is None:
        return host_path
    return launch.jail.inside(host_path)


def api_calls(launch: Launch) -> list[tuple[str, Any]]:
    """The client calls that configure the VM, in order, paths as Firecracker sees them.

    Each item is ``(client method name, argument)``; InstanceStart is not included.
    """
    config = launch.config
    calls: list[tuple[str, Any]] = []
    if launch.metrics_path is not None:
        calls.append(("put_metrics", models.Metrics(metrics_path=launch.seen(launch.metrics_path))))
    calls.append(("put_machine_config", config.machine))
    if config.cpu_config is not None:
        calls.append(("put_cpu_config", config.cpu_config))
    calls.append(("put_boot_source", boot_source(launch)))
    calls += [("put_drive", drive) for drive in drives(launch)]
    calls += [("put_pmem", pmem) for pmem in pmems(launch)]
    calls += [("put_network_interface", i.to_model()) for i in config.network_interfaces]
    if config.vsock is not None:
        calls.append(("put_vsock", vsock(launch)))
    if config.entropy is not None:
        calls.append(("put_entropy", config.entropy))
    if config.balloon is not None:
        calls.append(("put_balloon", config.balloon))
    if config.serial is not None:
        serial = config.serial.model_copy(
            update={"serial_out_path": _seen_path(launch, config.serial.serial_out_path)}
        )
        calls.append(("put_serial", serial))
    if config.memory_hotplug is not None:
        calls.append(("put_memory_hotplug", config.memory_hotplug))
    if config.mmds_config is not None:
        calls.append(("put_mmds_config", config.mmds_config))
    if config.mmds_data is not None:
        calls.append(("put_mmds", dict(config.mmds_data)))
    return calls


def boot_source(launch: Launch) -> models.BootSource:
    """The boot source, paths as Firecracker sees them."""
    config = launch.config
    return models.BootSource(
        kernel_image_path=config.kernel_image_path,
        initrd_path=config.initrd_path,
        boot_args=config.kernel_args,
    )


def drives(launch: Launch) -> list[models.Drive]:
    """The drives, paths as Firecracker sees them."""
    return [
        d.model_copy(update={"path_on_host": _seen_path(launch, d.path_on_host)})
        for d in launch.config.drives
    ]


def pmems(launch: Launch) -> list[models.Pmem]:
    """The pmem devices, paths as Firecracker sees them."""
    return [
        p.model_copy(update={"path_on_host": _seen_path(launch, p.path_on_host)})
        for p in launch.config.pmem
    ]


def vsock(launch: Launch) -> models.Vsock:
    """The vsock device; in a jail its socket is made inside the jail."""
    assert launch.config.vsock is not None
    device = launch.config.vsock
    if launch.jail is None:
        return device
    return device.model_copy(update={"uds_path": launch.jail.inside(device.uds_path)})


def config_file(launch: Launch) -> dict[str, Any]:
    """The ``--config-file`` document equivalent to :func:`api_calls`."""
    config = launch.config
    for name in ("serial", "cpu_config"):  # 1.14.2 ignores a "serial" key in the file
        if getattr(config, name) is not None:
            raise ConfigError(
                name, "cannot be given in a --config-file boot; use the API boot method"
            )
    document: dict[str, Any] = {
        "boot-source": boot_source(launch).to_api(),
        "machine-config": config.machine.to_api(),
        "drives": [d.to_api() for d in drives(launch)],
        "network-interfaces": [i.to_model().to_api() for i in config.network_interfaces],
    }
    if config.pmem:
        document["pmem"] = [p.to_api() for p in pmems(launch)]
    if launch.metrics_path is not None:
        document["metrics"] = {"metrics_path": launch.seen(launch.metrics_path)}
    if config.vsock is not None:
        document["vsock"] = vsock(launch).to_api()
    if config.entropy is not None:
        document["entropy"] = config.entropy.to_api()
    if config.balloon is not None:
        document["balloon"] = config.balloon.to_api()
    if config.mmds_config is not None:
        document["mmds-config"] = config.mmds_config.to_api()
    if config.memory_hotplug is not None:
        document["memory-hotplug"] = config.memory_hotplug.to_api()
    return document


def jailed_files(config: Config) -> list[tuple[str, Path, bool]]:
    """Every host file the VM uses: ``(config field, path, whether Firecracker writes it)``.

    Writable: the drives and pmem devices not marked read-only. See
    :meth:`firec.vm.jailer.Jail.bring_in` for how each goes into a jail.
    """
    drives = config.drives
    writable = {Path(d.path_on_host) for d in drives if d.path_on_host and not d.is_read_only}
    writable |= {Path(p.path_on_host) for p in config.pmem if not p.read_only}
    return [(name, path, path in writable) for name, path in config.input_files()]


def prepare(launch: Launch) -> None:
    """Make the VM's directory, bring files into the jail, make fifos and the config file.

    Everything made here is removed by :func:`cleanup`.
    """
    config = launch.config
    jail = launch.jail
    brought = jailed_files(config)
    if jail is not None:  # refuse a file that cannot go in before anything is made
        for field_name, path, writable in brought:
            jail.check_bring_in(path, writable=writable, field=field_name)
    launch.vm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if jail is not None:
        jail.root.mkdir(parents=True, exist_ok=True)
        for field_name, path, writable in brought:
            jail.bring_in(path, writable=writable, field=field_name)
        jail.make_dirs(str(Path(config.api_socket_path).parent))
        if config.vsock is not None:
            jail.make_dirs(str(Path(jail.inside(config.vsock.uds_path)).parent))
    else:
        _make_parent(launch, launch.socket_path)
        if launch.vsock_path is not None:
            remove_stale_socket(launch.vsock_path)  # Firecracker will not bind over it
    _make_output(launch, launch.log_path, fifo=launch.log_is_fifo)
    if launch.metrics_path is not None:
        _make_output(launch, launch.metrics_path, fifo=launch.metrics_is_fifo)
    if launch.config_file_path is not None:
        _write_owned(launch, launch.config_file_path, json.dumps(config_file(launch)))
    if launch.metadata_path is not None and config.mmds_data is not None:
        _write_owned(launch, launch.metadata_path, json.dumps(dict(config.mmds_data)))


def _make_parent(launch: Launch, path: Path) -> None:
    if path.parent != launch.vm_dir:  # made first thing
        path.parent.mkdir(parents=True, exist_ok=True)


def _make_output(launch: Launch, path: Path, *, fifo: bool) -> None:
    _make_parent(launch, path)
    if fifo:
        if path.exists():
            raise MachineError(f"cannot make fifo {path}: the path already exists")
        os.mkfifo(path, 0o600)
    else:
        path.touch(mode=0o600)
    if launch.jail is not None:
        os.chown(path, launch.jail.uid, launch.jail.gid)


def _write_owned(launch: Launch, path: Path, text: str) -> None:
    path.write_text(text)
    if launch.jail is not None:
        os.chown(path, launch.jail.uid, launch.jail.gid)


def spawn(launch: Launch) -> tuple[subprocess.Popen[bytes], IO[bytes] | None]:
    """Start the VMM process.

    Returns the process and, when the console goes to a callback, the pipe
    to read it from (the caller owns it).
    """
    console = launch.console
    stdout: Any
    opened: list[IO[bytes]] = []
    if console.kind is ConsoleKind.FILE:
        assert console.path is not None
        console.path.parent.mkdir(parents=True, exist_ok=True)
        stdout = open(console.path, "ab")  # noqa: SIM115 - handed to the child, closed below
        opened.append(stdout)
    elif console.kind is ConsoleKind.CALLBACK:
        stdout = subprocess.PIPE
    elif console.kind is ConsoleKind.TERMINAL:
        stdout = None
    else:
        stdout = subprocess.DEVNULL
    stderr = open(launch.stderr_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    opened.append(stderr)
    jailer = launch.config.jailer
    daemonized = jailer is not None and jailer.mode is JailerMode.DAEMON
    preexec = None
    netns_fd: int | None = None
    if launch.config.net_ns is not None and launch.jail is None:
        path = netns_path(launch.config.net_ns)
        try:
            netns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MachineError(f"cannot open network namespace {path}: {exc.strerror}") from exc
        preexec = _setns_into(netns_fd)
    try:
        process = subprocess.Popen(
            launch.argv,
            # the serial console reads Firecracker's stdin: give it the terminal's
            stdin=None if console.kind is ConsoleKind.TERMINAL else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=launch.vm_dir,
            preexec_fn=preexec,
            # a session of its own, so that the VM outlives a Ctrl-C to its controller;
            # but the jailer's --daemonize calls setsid() itself, which a session leader may not
            start_new_session=not daemonized,
        )
    except OSError as exc:
        raise MachineError(f"cannot start {launch.argv[0]}: {exc.strerror}") from exc
    finally:
        for handle in opened:
            handle.close()
        if netns_fd is not None:
            os.close(netns_fd)
    return process, process.stdout


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
    if launch.jail is not None:
        launch.jail.remove()
        if launch.jail.base.exists():
            left.append(f"{launch.jail.base}: could not be removed")
    left += remove_cgroups(launch.cgroups)
    shutil.rmtree(launch.vm_dir, ignore_errors=True)
    if launch.vm_dir.exists():
        left.append(f"{launch.vm_dir}: could not be removed")
    return left
