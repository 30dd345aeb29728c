"""From ``firec run``'s options to a validated :class:`~firec.vm.config.Config`.

:func:`run_config` turns the options into a config, through the config
builder, so that every value is checked before anything is made; the parts
with a syntax of their own are read here: ``--memory`` (:func:`parse_memory`),
``--drive`` (:func:`parse_drive`), ``--net``, ``--publish`` and ``--dns``
(:func:`network_interfaces`). A refusal names the option that set the value
(:func:`as_option_error`): ``--memory``, not ``machine.mem_size_mib``.

Example::

    >>> parse_memory("1G"), parse_drive("path=/data.img,id=data,ro", 1)
    (1024, ('data', PosixPath('/data.img'), True))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer

from firec.cli.attach import detached_console
from firec.cli.readiness import binary_or_doctor
from firec.errors import ConfigError, ValidationError
from firec.images import parse_size
from firec.images.defaults import read_image_defaults, sidecar_path
from firec.network import Interface
from firec.vm.config import BootMethod, Config, runtime_dir
from firec.vm.console import Console

__all__ = [
    "DEFAULT_BOOT_ARGS",
    "DEFAULT_SUBNET",
    "NETWORK_STATE",
    "JailerOptions",
    "NetworkOptions",
    "as_option_error",
    "network_interfaces",
    "parse_drive",
    "parse_memory",
    "run_config",
    "with_image_init",
]

#: The key in ``ctx.meta`` of the network state directory the command line chose (or None).
NETWORK_STATE = "firec.network_state"
DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off"
DEFAULT_SUBNET = "172.30.0.0/16"


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


def as_option_error(exc: ValidationError) -> ConfigError:
    """``exc`` with its field named as the option that set it (``--id``, ``--memory``...)."""
    errors = []
    for field, reason in exc.errors:
        option = _option_of(field)
        if option is not None and option != field:
            field = option if _OPTIONS.get(field) == option else f"{option} ({field})"
        errors.append((field, reason))
    return ConfigError(errors[0][0], errors[0][1], errors=errors)


@dataclass(frozen=True)
class JailerOptions:
    """What ``--jailer`` and its options ask for."""

    binary: Path | None
    uid: int
    gid: int
    allow_root: bool
    chroot_base: Path | None
    cgroups: list[str]
    cgroup_version: int | None
    new_pid_ns: bool


def with_image_init(boot_args: str, rootfs: Path | None) -> str:
    """``boot_args`` with ``init=`` added when ``rootfs`` was built to boot firec's agent.

    ``firec image build`` records the init to run (``<rootfs>.json``, see
    :mod:`firec.images.defaults`); a command line that names an ``init=``
    already is left as it is.

    Example::

        >>> with_image_init("console=ttyS0", None)
        'console=ttyS0'
    """
    if rootfs is None or any(arg.startswith("init=") for arg in boot_args.split()):
        return boot_args
    record = sidecar_path(rootfs)
    if not record.is_file():
        return boot_args
    init = read_image_defaults(record).init
    return f"{boot_args} init={init}" if init else boot_args


def run_config(
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
    jailer: JailerOptions | None,
    console: bool,
    network: NetworkOptions,
) -> Config:
    """The config ``firec run``'s options describe (validated: nothing is made yet)."""
    vm_dir = (workdir or runtime_dir()) / vm_id
    args = boot_args if boot_args is not None else DEFAULT_BOOT_ARGS
    builder = (
        Config.builder(vm_id, kernel.resolve())
        .kernel_args(with_image_init(args, rootfs))
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
    builder = builder.console(Console.terminal() if console else detached_console(vm_dir))
    for nic in network_interfaces(vm_id, network):
        builder = builder.add_network_interface(nic)
    if ctx.meta.get(NETWORK_STATE) is not None:
        builder = builder.state_dir(ctx.meta[NETWORK_STATE])
    config = builder.build()
    if config.jailer is not None and jailer is not None:
        # only now, so that a bad option is a usage error before a missing jailer (exit 3)
        jailer_path = binary_or_doctor(jailer.binary, "jailer")
        config = config.replace(jailer=replace(config.jailer, jailer_binary=jailer_path))
    return config
