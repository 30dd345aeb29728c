"""``firec run``: from command-line options to a running, recorded microVM."""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

from firec.cli.output import ExitCode, err, fail, out, print_json
from firec.cli.vms import describe
from firec.errors import APIError, ConfigError, FirecError, MachineError, ValidationError
from firec.host import checks as host
from firec.host.registry import Registration, Registry, VmRecord, reap
from firec.images import parse_size
from firec.network import Interface
from firec.vm._launch import plan
from firec.vm._sync.machine import Machine
from firec.vm.config import BootMethod, Config, runtime_dir
from firec.vm.console import Console

__all__ = [
    "NetworkOptions",
    "StartedVm",
    "network_interfaces",
    "run",
    "start_vm",
]

#: The key in ``ctx.meta`` of the network state directory the command line chose (or None).
NETWORK_STATE = "firec.network_state"
DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off"
DEFAULT_SUBNET = "172.30.0.0/16"
TEST_GUEST_ECHO = "hello-from-firec"


# -- options -> config --------------------------------------------------------------------------


def new_vm_id() -> str:
    """A random microVM id: 12 hex digits."""
    return secrets.token_hex(6)


def parse_memory(value: str) -> int:
    """Guest memory in MiB from ``"512"`` (MiB) or a size with a unit (``"1G"``)."""
    text = value.strip()
    valid = "give MiB (e.g. 512) or a size with a unit K, M, G or T (e.g. 1G), at least 1 MiB"
    if text.isascii() and text.isdigit():
        mib = int(text)
    elif text.startswith("-"):
        raise ConfigError("--memory", f"{value!r} is negative: {valid}")
    else:
        try:
            size = parse_size(text)
        except ValidationError:
            raise ConfigError("--memory", f"cannot read {value!r}: {valid}") from None
        if size % (1 << 20):
            raise ConfigError("--memory", f"{value!r} is not a whole number of MiB: {valid}")
        mib = size >> 20
    if mib < 1:
        raise ConfigError("--memory", f"{value!r} is less than 1 MiB: {valid}")
    return mib


def parse_drive(spec: str, index: int) -> tuple[str, Path, bool]:
    """``PATH`` or ``path=PATH[,id=ID][,ro]``: ``(drive id, path, read-only)``."""
    if "=" not in spec:
        return f"drive{index}", Path(spec), False
    drive_id, path, read_only = f"drive{index}", None, False
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if key == "path" and sep:
            path = Path(value)
        elif key == "id" and sep:
            drive_id = value
        elif key == "ro" and not sep:
            read_only = True
        else:
            raise ConfigError(
                f"--drive {spec}", f"unknown part {part!r}: use path=PATH[,id=ID][,ro]"
            )
    if path is None:
        raise ConfigError(f"--drive {spec}", "no path=: use path=PATH[,id=ID][,ro]")
    return drive_id, path, read_only


@dataclass(frozen=True)
class NetworkOptions:
    """The network the command line asked for."""

    specs: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


def _port_forwards(specs: Sequence[str]) -> tuple[Any, ...]:
    from firec.network import PortForward

    forwards = []
    for spec in specs:
        ports, _, protocol = spec.partition("/")
        host_port, _, guest_port = ports.partition(":")
        if not host_port.isdigit() or (guest_port and not guest_port.isdigit()):
            raise ConfigError(f"--publish {spec}", "use HOST_PORT[:GUEST_PORT][/tcp|/udp]")
        forwards.append(
            PortForward(
                int(host_port),
                int(guest_port) if guest_port else None,
                protocol or "tcp",  # type: ignore[arg-type]
            )
        )
    return tuple(forwards)


def network_interfaces(vm_id: str, options: NetworkOptions) -> list[Interface]:
    """The interfaces ``--net`` asks for (eth0, eth1...), with their network plans."""
    from firec.network import CNINetwork, RoutedNetwork
    from firec.network.names import vm_key

    nics: list[Interface] = []
    forwards = _port_forwards(options.publish)
    specs = [s for s in options.specs if s != "none"]
    for index, spec in enumerate(specs):
        kind, _, arg = spec.partition(":")
        iface_id = f"eth{index}"
        tap = f"fct{vm_key(vm_id)}{index}"[:15]
        if kind == "tap" and arg:
            nics.append(Interface(iface_id, arg))  # an existing tap
        elif kind == "routed":
            routed = RoutedNetwork(
                subnet=arg or DEFAULT_SUBNET,
                nameservers=options.dns,
                port_forwards=forwards if index == 0 else (),
            )
            nics.append(Interface(iface_id, tap, network=routed))
        elif kind == "cni" and arg:
            nics.append(Interface(iface_id, tap, network=CNINetwork(arg)))
        else:
            raise ConfigError(
                f"--net {spec}",
                "use none, tap:NAME (an existing tap), routed[:SUBNET] or cni:CONFLIST",
            )
    if forwards and not (nics and isinstance(nics[0].network, RoutedNetwork)):
        raise ConfigError("--publish", "port forwards need a routed eth0 (--net routed)")
    return nics


# -- starting -----------------------------------------------------------------------------------


@dataclass
class StartedVm:
    """A VM :func:`start_vm` started: its machine and its (saved) record."""

    machine: Machine
    record: VmRecord


def boot_machine(config: Config, registration: Registration) -> Machine:
    """Spawn a VMM for ``config`` and boot it (the way ``firec run`` starts a VM)."""
    machine = Machine.create(config, registry=registration)
    try:
        machine.start()
    except BaseException:
        machine.delete()
        raise
    return machine


def start_vm(
    registry: Registry,
    config: Config,
    *,
    detached: bool,
    make: Callable[[Config, Registration], Machine] = boot_machine,
    origin: str | None = None,
) -> StartedVm:
    """Claim the VM's id, then ``make`` it (spawn and boot, or restore); on failure remove it all.

    The id is claimed with a record first (:class:`~firec.errors.InUseError`
    when it is taken, before anything is made); the machine keeps the record
    up to date, so a crash at any point leaves enough for ``firec gc``.
    """
    registration = Registration.claim(registry, config, plan(config), origin=origin)
    machine: Machine | None = None
    try:
        machine = make(config, registration)
        if detached:
            machine.detach()
    except BaseException:
        if machine is not None:
            with contextlib.suppress(FirecError):
                machine.delete()
        with registry.lock(config.vm_id):  # what make() made before its machine existed
            latest = registry.load(config.vm_id)
            if latest is not None and latest.controller == registration.record.controller:
                with contextlib.suppress(FirecError):
                    reap(registry, latest)
        raise
    return StartedVm(machine, registration.record)


# -- the foreground -----------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGHUP reached a foreground ``firec run``."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(sig).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def detach_or_run_foreground(
    registry: Registry, started: StartedVm, *, detach: bool, as_json: bool, stop_timeout: float
) -> None:
    """Print the started VM (detached), or attend it in the foreground until it ends."""
    if detach:
        if as_json:
            print_json(describe(started.record))
        else:
            out.print(started.record.vm_id)
        return
    err.print(
        f"[dim]firec: microVM {started.record.vm_id} is running (pid {started.machine.pid}); "
        "Ctrl-C stops it[/]"
    )
    code = run_foreground(registry, started, stop_timeout)
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def run_foreground(registry: Registry, started: StartedVm, stop_timeout: float) -> ExitCode:
    """Wait for the VM; on Ctrl-C (or SIGTERM/SIGHUP) stop it; then remove everything."""
    machine, vm_id = started.machine, started.record.vm_id
    interrupted = False
    try:
        with _stop_on_signals():
            try:
                status = machine.wait()
            except (KeyboardInterrupt, _Stop):
                interrupted = True
                err.print(f"[dim]firec: stopping microVM {vm_id}[/]")
                status = machine.shutdown(timeout=stop_timeout, term_timeout=stop_timeout)
        tail = [] if status.ok else machine.last_lines()  # before its directory goes
    finally:
        try:
            machine.delete()
        finally:
            with registry.lock(vm_id):
                latest = registry.load(vm_id)
                if latest is not None:
                    reap(registry, latest)
    if interrupted:
        return ExitCode.INTERRUPTED
    if status.ok:
        return ExitCode.OK
    raise MachineError(
        f"microVM {vm_id}: the VMM exited: {status}",
        log_tail=tail,
        exit_code=status.code if status.code is not None else -1,
    )


# -- the command --------------------------------------------------------------------------------


def _not_ready(checks: list[host.Check], what: str = "") -> NoReturn:
    """Exit HOST_NOT_READY naming each failed check and its fix, as ``firec doctor`` would."""
    lines = [f"{c.name}: {c.detail}" for c in checks]
    fixes = [f"{c.name}: {c.fix}" for c in checks if c.fix]
    fail(
        ExitCode.HOST_NOT_READY,
        (f"{what}\n" if what else "")
        + "this host cannot run microVMs yet:\n  "
        + "\n  ".join(lines),
        "\n  ".join([*fixes, "`firec doctor` checks everything"]),
    )


def _binary_or_doctor(explicit: Path | None, name: str) -> Path:
    """The binary to run, or exit HOST_NOT_READY with what ``firec doctor`` says is missing."""
    if explicit is not None:
        if not explicit.is_file() or not os.access(explicit, os.X_OK):
            fail(ExitCode.USAGE, f"--{name}-bin {explicit} is not an executable file")
        return explicit
    check = host.check_binary(name)
    path, _ = host.find_binary(name)
    if check.ok and path is not None:
        return path
    kvm = host.check_kvm()
    _not_ready([check] if kvm.ok else [kvm, check])


def _explain_host(exc: FirecError) -> None:
    """When a VM did not come up, say whether KVM is the reason (then exit HOST_NOT_READY)."""
    kvm = host.check_kvm()
    if not kvm.ok:
        _not_ready([kvm], str(exc))


def _check_jailer_privileges() -> None:
    """``--jailer`` needs root: refuse before anything is made, saying why and what to do."""
    check = host.check_jailer_privileges()
    if not check.ok:
        fail(
            ExitCode.HOST_NOT_READY,
            f"--jailer: {check.detail}",
            "run it as root (sudo firec run --jailer ...), or leave out --jailer to run "
            "Firecracker without the jailer",
        )


#: The option that sets each config field (or the field it is part of).
_OPTIONS = {
    "vm_id": "--id",
    "kernel_image": "KERNEL",
    "kernel_args": "--boot-args",
    "initrd": "--initrd",
    "machine.vcpu_count": "--cpus",
    "machine.mem_size_mib": "--memory",
    "vsock": "--vsock",
    "log_level": "--log-level",
    "boot_method": "--boot-method",
    "workdir": "--workdir",
    "state_dir": "--state-dir",
    "firecracker_binary": "--firecracker-bin",
    "jailer.exec_file": "--firecracker-bin",
    "jailer.jailer_binary": "--jailer-bin",
    "jailer.uid": "--uid",
    "jailer.gid": "--gid",
    "jailer.allow_root": "--allow-root",
    "jailer.chroot_base_dir": "--chroot-base",
    "jailer.cgroups": "--cgroup",
    "jailer.cgroup_version": "--cgroup-version",
    "network_interfaces": "--net",
    "iface_id": "--net",
    "host_dev_name": "--net",
    "subnet": "--net",
    "conflist": "--net",
    "nameservers": "--dns",
    "host_port": "--publish",
    "guest_port": "--publish",
    "protocol": "--publish",
}
_DRIVE_ID = re.compile(r"drives(?:\.([^.]*)\.|\[\d+\][^(]*\(([^)]*)\))")


def _option_of(field: str) -> str | None:
    """The ``firec run`` option behind a config field (``"machine.mem_size_mib"``: ``--memory``)."""
    if field.startswith("drives"):
        match = _DRIVE_ID.match(field)
        return "--rootfs" if match and "rootfs" in (match[1], match[2]) else "--drive"
    parts = re.sub(r"\[\d+\]| .*$", "", field).split(".")
    for end in range(len(parts), 0, -1):
        option = _OPTIONS.get(".".join(parts[:end]))
        if option is not None:
            return option
    return None


def _as_option_error(exc: ValidationError) -> ConfigError:
    """``exc`` with its field named as the option that set it (``--id``, ``--memory``...)."""
    errors = []
    for field, reason in exc.errors:
        option = _option_of(field)
        if option is not None and option != field:
            field = option if _OPTIONS.get(field) == option else f"{option} ({field})"
        errors.append((field, reason))
    return ConfigError(errors[0][0], errors[0][1], errors=errors)


def run(
    ctx: typer.Context,
    kernel: Annotated[
        Path | None,
        typer.Argument(help="The guest kernel (on x86-64 an uncompressed ELF vmlinux)."),
    ] = None,
    test_guest: Annotated[
        bool,
        typer.Option(
            "--test-guest",
            help="Boot firec's tiny test guest (built with cc) instead of KERNEL: a smoke "
            "test. In the foreground it prints and powers off; detached it keeps running.",
        ),
    ] = False,
    boot_args: Annotated[
        str | None, typer.Option("--boot-args", help="The kernel command line.")
    ] = None,
    initrd: Annotated[Path | None, typer.Option(help="An initrd.")] = None,
    rootfs: Annotated[
        Path | None, typer.Option(help="The root filesystem image (drive 'rootfs').")
    ] = None,
    rootfs_ro: Annotated[bool, typer.Option("--rootfs-ro", help="Attach it read-only.")] = False,
    drive: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC", help="Another drive: PATH, or path=PATH[,id=ID][,ro]. Repeatable."
        ),
    ] = None,
    cpus: Annotated[int, typer.Option(help="vCPUs.", min=1, max=32)] = 1,
    memory: Annotated[str, typer.Option(help="Guest memory: MiB, or a size like 1G.")] = "128",
    net: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC",
            help="A network interface: none, tap:NAME (an existing tap), routed[:SUBNET] (NAT) "
            "or cni:CONFLIST. Repeatable (eth0, eth1...). Needs root.",
        ),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "--publish",
            "-p",
            metavar="PORTS",
            help="Forward a host port: HOST[:GUEST][/udp] (routed eth0).",
        ),
    ] = None,
    dns: Annotated[
        list[str] | None, typer.Option(metavar="ADDR", help="A nameserver for the guest (routed).")
    ] = None,
    vsock: Annotated[
        str | None,
        typer.Option(help="A vsock device: CID, or CID:PATH for its host socket."),
    ] = None,
    vm_id: Annotated[
        str | None, typer.Option("--id", help="The microVM id (default: random).")
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", "-d", help="Start it and return; it runs on (see firec ls/stop/rm)."
        ),
    ] = False,
    firecracker_bin: Annotated[
        Path | None,
        typer.Option(help="The Firecracker binary (default: $FIRECRACKER_BIN, PATH, installed)."),
    ] = None,
    jailer: Annotated[bool, typer.Option("--jailer", help="Run under the jailer.")] = False,
    jailer_bin: Annotated[
        Path | None, typer.Option(help="The jailer binary (default: $JAILER_BIN, PATH...).")
    ] = None,
    uid: Annotated[
        int | None,
        typer.Option(help="Jailed (required): the unprivileged uid Firecracker runs as."),
    ] = None,
    gid: Annotated[
        int | None,
        typer.Option(help="Jailed (required): the unprivileged gid Firecracker runs as."),
    ] = None,
    allow_root: Annotated[
        bool,
        typer.Option(
            "--allow-root", help="Jailed: accept --uid 0 / --gid 0 (Firecracker as root)."
        ),
    ] = False,
    chroot_base: Annotated[
        Path | None, typer.Option(help="Jailed: --chroot-base-dir (default /srv/jailer).")
    ] = None,
    cgroup: Annotated[
        list[str] | None,
        typer.Option(metavar="FILE=VALUE", help="Jailed: --cgroup FILE=VALUE. Repeatable."),
    ] = None,
    cgroup_version: Annotated[
        int | None, typer.Option(help="Jailed: --cgroup-version (1 or 2).", min=1, max=2)
    ] = None,
    new_pid_ns: Annotated[
        bool, typer.Option("--new-pid-ns", help="Jailed: a new PID namespace.")
    ] = False,
    boot_method: Annotated[
        BootMethod, typer.Option(help="Configure over the API, or with one --config-file.")
    ] = BootMethod.API,
    log_level: Annotated[
        str | None, typer.Option(help="Firecracker's log level (Error, Warning, Info, Debug).")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where firec keeps the VM's files (default: /run/firec, per user)."),
    ] = None,
    stop_timeout: Annotated[
        float,
        typer.Option(help="On Ctrl-C: seconds for the guest after Ctrl+Alt+Del, then SIGTERM."),
    ] = 3.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Detached: print the VM as JSON.")
    ] = False,
) -> None:
    """Boot a microVM: in the foreground with its console here, or detached with -d.

    In the foreground, Ctrl-C stops the VM and removes everything it had. The
    exit status is 0 when Firecracker exited cleanly (the guest powered off).
    """
    registry: Registry = ctx.obj
    if test_guest == (kernel is not None):
        fail(ExitCode.USAGE, "give either a KERNEL or --test-guest", "firec run --help")
    if not math.isfinite(stop_timeout) or stop_timeout < 0:
        raise ConfigError("--stop-timeout", f"{stop_timeout}: give seconds, 0 or more")
    if jailer and (uid is None or gid is None):
        raise ConfigError(
            "--uid" if uid is None else "--gid",
            "--jailer needs --uid and --gid: the unprivileged user and group Firecracker "
            "runs as in the jail (e.g. --uid 1234 --gid 1234)",
        )
    for option, value in (("--uid", uid), ("--gid", gid)):
        if jailer and value == 0 and not allow_root:
            raise ConfigError(
                option,
                "0 is root: Firecracker would run as root inside the jail, which defeats the "
                "jailer; give an unprivileged --uid and --gid (e.g. --uid 1234 --gid 1234), or "
                "add --allow-root to run it as root all the same",
            )
    firecracker = _binary_or_doctor(firecracker_bin, "firecracker")
    if test_guest:
        from firec.testing.guest import build_test_guest, guest_args

        kernel = build_test_guest()
        if boot_args is None:
            boot_args = "console=ttyS0 " + guest_args(echo=[TEST_GUEST_ECHO], exit=not detach)
    assert kernel is not None
    vm_id = vm_id if vm_id is not None else new_vm_id()
    try:
        config = _config(
            ctx,
            vm_id=vm_id,
            kernel=kernel,
            boot_args=boot_args,
            workdir=workdir,
            boot_method=boot_method,
            cpus=cpus,
            memory=memory,
            initrd=initrd,
            rootfs=rootfs,
            rootfs_ro=rootfs_ro,
            drives=drive or [],
            vsock=vsock,
            log_level=log_level,
            firecracker=firecracker,
            jailer=_JailerOptions(
                jailer_bin,
                uid or 0,
                gid or 0,
                allow_root,
                chroot_base,
                cgroup or [],
                cgroup_version,
                new_pid_ns,
            )
            if jailer
            else None,
            console=not detach,
            network=NetworkOptions(tuple(net or ()), tuple(publish or ()), tuple(dns or ())),
        )
    except ValidationError as exc:
        raise _as_option_error(exc) from None
    if jailer:
        _check_jailer_privileges()
    try:
        started = start_vm(registry, config, detached=detach)
    except MachineError as exc:
        _explain_host(exc)
        raise
    except APIError as exc:
        _explain_host(exc)
        fail(ExitCode.VM_FAILED, f"microVM {vm_id} did not boot: {exc}")
    detach_or_run_foreground(
        registry, started, detach=detach, as_json=as_json, stop_timeout=stop_timeout
    )


@dataclass(frozen=True)
class _JailerOptions:
    """What ``--jailer`` and its options ask for."""

    binary: Path | None
    uid: int
    gid: int
    allow_root: bool
    chroot_base: Path | None
    cgroups: list[str]
    cgroup_version: int | None
    new_pid_ns: bool


def _config(
    ctx: typer.Context,
    *,
    vm_id: str,
    kernel: Path,
    boot_args: str | None,
    workdir: Path | None,
    boot_method: BootMethod,
    cpus: int,
    memory: str,
    initrd: Path | None,
    rootfs: Path | None,
    rootfs_ro: bool,
    drives: list[str],
    vsock: str | None,
    log_level: str | None,
    firecracker: Path,
    jailer: _JailerOptions | None,
    console: bool,
    network: NetworkOptions,
) -> Config:
    """The config ``firec run``'s options describe (validated: nothing is made yet)."""
    vm_dir = (workdir or runtime_dir()) / vm_id
    builder = (
        Config.builder(vm_id, kernel.resolve())
        .kernel_args(boot_args if boot_args is not None else DEFAULT_BOOT_ARGS)
        .workdir((workdir or runtime_dir()).resolve())
        .boot_method(boot_method)
        .machine_cfg()
        .vcpu_count(cpus)
        .mem_size_mib(parse_memory(memory))
        .build()
    )
    if initrd is not None:
        builder = builder.initrd_path(initrd.resolve())
    if rootfs is not None:
        builder = (
            builder.add_drive("rootfs", rootfs.resolve())
            .is_root_device(True)
            .is_read_only(rootfs_ro)
            .build()
        )
    for index, spec in enumerate(drives, start=1):
        drive_id, path, read_only = parse_drive(spec, index)
        builder = builder.add_drive(drive_id, path.resolve()).is_read_only(read_only).build()
    if vsock is not None:
        cid, _, uds = vsock.partition(":")
        if not (cid.isascii() and cid.isdigit()):
            raise ConfigError("--vsock", f"{vsock!r}: use CID or CID:PATH")
        builder = builder.vsock(int(cid), Path(uds).resolve() if uds else vm_dir / "vsock.sock")
    if log_level is not None:
        builder = builder.log_level(log_level)
    if jailer is not None:
        jb = builder.jailer_cfg().exec_file(firecracker)  # its jailer binary comes last
        jb = jb.uid(jailer.uid).gid(jailer.gid).allow_root(jailer.allow_root)
        if jailer.chroot_base is not None:
            jb = jb.chroot_base_dir(jailer.chroot_base.resolve())
        for value in jailer.cgroups:
            jb = jb.cgroup(value)
        if jailer.cgroup_version is not None:
            jb = jb.cgroup_version(1 if jailer.cgroup_version == 1 else 2)
        if jailer.new_pid_ns:
            jb = jb.new_pid_ns()
        builder = jb.build().metrics_path("/metrics.json")
    else:
        builder = builder.firecracker_binary(firecracker).metrics_path(vm_dir / "metrics.json")
    if console:
        builder = builder.console(Console.terminal())
    for nic in network_interfaces(vm_id, network):
        builder = builder.add_network_interface(nic)
    if ctx.meta.get(NETWORK_STATE) is not None:
        builder = builder.state_dir(ctx.meta[NETWORK_STATE])
    config = builder.build()
    if config.jailer is not None and jailer is not None:
        # only now, so that a bad option is a usage error before a missing jailer (exit 3)
        jailer_path = _binary_or_doctor(jailer.binary, "jailer")
        config = config.replace(jailer=replace(config.jailer, jailer_binary=jailer_path))
    return config
