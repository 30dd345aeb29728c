"""Snapshots from the command line: ``snapshot``, ``restore``, ``clone``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from firec.cli.attach import detached_console
from firec.cli.output import ExitCode, fail, out, print_json
from firec.cli.start import detach_or_run_foreground, new_vm_id, start_vm
from firec.cli.vms import VmState, live_state, resolve
from firec.errors import ConfigError
from firec.host.registry import Registration, Registry, VmRecord
from firec.snapshots.snapshot import Snapshot
from firec.vm._sync.machine import Machine
from firec.vm.config import Config, runtime_dir
from firec.vm.console import Console

__all__ = ["clone", "restore", "snapshot"]

VmArgument = Annotated[str, typer.Argument(help="The microVM id (or a unique start of it).")]
DetachOption = Annotated[
    bool, typer.Option("--detach", "-d", help="Start it and return; it runs on.")
]
IdOption = Annotated[str | None, typer.Option("--id", help="The new microVM's id.")]
TapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tap",
        metavar="IFACE=TAP",
        help="IFACE=TAP: the tap an interface of the snapshot uses now. Repeatable.",
    ),
]
WorkdirOption = Annotated[
    Path | None, typer.Option(help="Where firec keeps the VM's files (default: /run/firec).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Detached: print the VM as JSON.")]
StopTimeoutOption = Annotated[
    float, typer.Option(help="On Ctrl-C: seconds for the guest after Ctrl+Alt+Del, then SIGTERM.")
]


def attach(registry: Registry, record: VmRecord) -> Machine:
    """A :class:`~firec.Machine` for a recorded, running VM, with all its launch facts.

    :meth:`Machine.connect <firec.Machine.connect>` by the record's id: the
    machine knows the VM's config, jail and files (from the record), so that
    snapshots name the right host paths and its agent is reached.
    """
    if record.socket is None or record.vmm is None:
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} has not started")
    return Machine.connect(record.vm_id, registry=registry)


def _running(record: VmRecord) -> VmState:
    state = live_state(record)
    if state not in (VmState.RUNNING, VmState.PAUSED):
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is {state.value}")
    return state


def snapshot(
    ctx: typer.Context,
    vm: VmArgument,
    directory: Annotated[Path, typer.Argument(help="A new (or empty) directory for it.")],
    keep_paused: Annotated[
        bool, typer.Option("--keep-paused", help="Leave the VM paused afterwards.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot's manifest.")] = False,
) -> None:
    """Take a full snapshot of a microVM (pausing it meanwhile) into DIRECTORY."""
    registry: Registry = ctx.obj
    record = resolve(registry, vm)
    with registry.lock(record.vm_id):
        state = _running(record)
        machine = attach(registry, record)
        try:
            taken = machine.snapshot(directory, resume=state is VmState.RUNNING and not keep_paused)
        finally:
            machine.client.close()
    if as_json:
        print_json(taken.manifest())
    else:
        out.print(str(taken.directory), markup=False)


def _overrides(taps: list[str] | None) -> dict[str, str]:
    overrides = {}
    for spec in taps or []:
        iface, sep, tap = spec.partition("=")
        if not sep or not iface or not tap:
            raise ConfigError(f"--tap {spec}", "use IFACE=TAP, e.g. eth0=tap-copy")
        overrides[iface] = tap
    return overrides


def _check_interfaces(
    interfaces: Iterable[str], overrides: dict[str, str], what: str, owner: str
) -> None:
    """Exit (usage) unless ``--tap`` gives each of ``what``'s interfaces a tap of its own."""
    missing = sorted(set(interfaces) - set(overrides))
    if missing:
        fail(
            ExitCode.USAGE,
            f"{what} has network interfaces ({', '.join(missing)}) whose taps belong to {owner}",
            "give each a tap of its own: " + " ".join(f"--tap {i}=TAP" for i in missing),
        )


def restore(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A snapshot directory (firec snapshot).")],
    vm_id: IdOption = None,
    detach: DetachOption = False,
    paused: Annotated[bool, typer.Option("--paused", help="Leave the VM paused.")] = False,
    tap: TapOption = None,
    firecracker_bin: Annotated[
        Path | None,
        typer.Option(help="The Firecracker binary (default: the one that took the snapshot)."),
    ] = None,
    workdir: WorkdirOption = None,
    stop_timeout: StopTimeoutOption = 3.0,
    as_json: JsonOption = False,
) -> None:
    """Start a new microVM from a snapshot (unjailed; its drives must still exist)."""
    registry: Registry = ctx.obj
    snap = Snapshot.open(directory)
    overrides = _overrides(tap)
    _check_interfaces(
        snap.interfaces, overrides, f"snapshot {snap.directory}", "the VM it was taken from"
    )
    config = Config.from_snapshot(snap, vm_id or new_vm_id())
    config = config.replace(workdir=(workdir or runtime_dir()).resolve(), vsock=None)
    if firecracker_bin is not None:
        config = config.replace(firecracker_binary=firecracker_bin.resolve())
    config = config.replace(
        console=Console.terminal() if not detach else detached_console(config.vm_dir)
    )
    config.validate(check_files=False)
    vsock = config.vm_dir / "vsock.sock" if snap.vm_config.get("vsock") else None

    def make(config: Config, registration: Registration) -> Machine:
        return Machine.restore(
            snap,
            config,
            resume=not paused,
            network_overrides=overrides or None,
            vsock_override=vsock,
            registry=registration,
        )

    started = start_vm(
        registry, config, detached=detach, make=make, origin=f"snapshot:{snap.directory}"
    )
    detach_or_run_foreground(
        registry, started, detach=detach, as_json=as_json, stop_timeout=stop_timeout
    )


def clone(
    ctx: typer.Context,
    vm: VmArgument,
    vm_id: IdOption = None,
    detach: DetachOption = False,
    tap: TapOption = None,
    share_drives: Annotated[
        bool,
        typer.Option(
            "--share-drives",
            help="Let the copy use the original's writable drives (both then write to them).",
        ),
    ] = False,
    stop_timeout: StopTimeoutOption = 3.0,
    as_json: JsonOption = False,
) -> None:
    """Start a copy of a running microVM: snapshot it, then restore the snapshot as a new VM.

    The snapshot is kept in the copy's directory and removed with it; the
    original is paused for the snapshot only. The copy runs like the
    original (binary, jailer), with the original's drives.
    """
    registry: Registry = ctx.obj
    source = resolve(registry, vm)
    _running(source)
    overrides = _overrides(tap)
    original = source.vm_config
    writable = [d.drive_id for d in original.drives if not d.is_read_only]
    if writable and not share_drives:
        fail(
            ExitCode.USAGE,
            f"microVM {source.vm_id} has writable drives ({', '.join(writable)}): the copy "
            "would write to the same files",
            "attach them read-only, or accept sharing with --share-drives",
        )
    interfaces = [i.iface_id for i in original.network_interfaces]
    _check_interfaces(interfaces, overrides, f"microVM {source.vm_id}", "it")
    new_id = vm_id or new_vm_id()
    config = original.replace(
        vm_id=new_id,
        console=Console.terminal(),
        network_interfaces=(),
        net_ns=None,
        vsock=None,
    )
    config = config.replace(metrics_path=None)  # a restore configures no metrics
    if detach:
        config = config.replace(console=detached_console(config.vm_dir))
    config.validate(check_files=False)
    vsock = None
    if original.vsock is not None:  # the copy's Firecracker binds the socket the snapshot names
        seen = original.layout.seen(original.vsock.uds_path)
        if config.layout.on_host(seen) == original.layout.on_host(seen):  # the original's own
            vsock = config.vm_dir / "vsock.sock"

    def make(config: Config, registration: Registration) -> Machine:
        with registry.lock(source.vm_id):
            machine = attach(registry, source)
            try:
                resume = live_state(source) is VmState.RUNNING
                snap = machine.snapshot(config.vm_dir / "snapshot", resume=resume)
            finally:
                machine.client.close()
        return Machine.restore(
            snap,
            config,
            network_overrides=overrides or None,
            vsock_override=vsock,
            registry=registration,
        )

    started = start_vm(registry, config, detached=detach, make=make, origin=f"clone:{source.vm_id}")
    detach_or_run_foreground(
        registry, started, detach=detach, as_json=as_json, stop_timeout=stop_timeout
    )
