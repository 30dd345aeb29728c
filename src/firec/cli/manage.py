"""Managing recorded microVMs: ls, inspect, stop, kill, pause, resume, rm, gc."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from firec import _statedirs
from firec.api import models
from firec.api._sync.client import Client
from firec.cli.output import ExitCode, err, fail, out, print_json, table
from firec.cli.runconfig import NETWORK_STATE
from firec.cli.vms import Summary, VmState, describe, live_state, remove, resolve, stop
from firec.errors import FirecError
from firec.host.registry import Registry, reap_abandoned
from firec.vm.guest_agent import hide_tokens

__all__ = ["gc", "inspect", "kill", "ls", "pause", "resume", "rm", "stop_command"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
VmArgument = Annotated[str, typer.Argument(help="The microVM id (or a unique start of it).")]
VmsArgument = Annotated[list[str], typer.Argument(help="microVM ids (or unique starts of them).")]


def ls(
    ctx: typer.Context,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the ids.")] = False,
) -> None:
    """List the microVMs firec started on this host, running or not."""
    registry: Registry = ctx.obj
    summaries = [Summary(r, live_state(r)) for r in registry.records()]
    if as_json:
        print_json([describe(s.record, s.state) for s in summaries])
        return
    if quiet:
        for summary in summaries:
            out.print(summary.record.vm_id)
        return
    rows = []
    for s in summaries:
        machine = s.record.config.get("machine", {})
        rows.append(
            [
                s.record.vm_id,
                s.state.value,
                s.mode,
                s.record.vmm.pid if s.record.vmm and s.state is not VmState.EXITED else "",
                machine.get("vcpu_count", 1),
                f"{machine.get('mem_size_mib', 128)} MiB",
                ", ".join(s.addresses),
                s.record.created.replace("+00:00", "Z"),
            ]
        )
    out.print(table(["ID", "STATE", "MODE", "PID", "CPUS", "MEMORY", "ADDRESS", "CREATED"], rows))


def inspect(ctx: typer.Context, vm: VmArgument) -> None:
    """Everything firec knows about a microVM, as JSON (its record, state, live config)."""
    registry: Registry = ctx.obj
    record = resolve(registry, vm)
    data = describe(record)
    if data["state"] in (VmState.RUNNING, VmState.PAUSED, VmState.NOT_STARTED) and record.socket:
        try:
            with Client(record.socket, timeout=2.0) as client:
                data["vm_config"] = hide_tokens(client.get_vm_config().to_api())
        except FirecError as exc:
            data["vm_config_error"] = str(exc)
    print_json(data)


def stop_command(
    ctx: typer.Context,
    vms: VmsArgument,
    timeout: Annotated[
        float, typer.Option(help="Seconds for the guest after Ctrl+Alt+Del, then after SIGTERM.")
    ] = 5.0,
) -> None:
    """Stop microVMs: Ctrl+Alt+Del, then SIGTERM, then SIGKILL. `firec rm` removes them."""
    registry: Registry = ctx.obj
    for record in [resolve(registry, vm) for vm in vms]:
        how = stop(record, timeout=timeout, term_timeout=timeout)
        out.print(f"{record.vm_id} {how}")


_SIGNALS = {s.name.removeprefix("SIG"): s for s in signal.Signals}


def kill(
    ctx: typer.Context,
    vms: VmsArgument,
    sig: Annotated[
        str, typer.Option("--signal", "-s", help="The signal: KILL, TERM, HUP, INT...")
    ] = "KILL",
) -> None:
    """Send a signal to microVMs' Firecracker processes (default SIGKILL)."""
    registry: Registry = ctx.obj
    name = sig.upper().removeprefix("SIG")
    if name.isdigit():
        number = int(name)
    elif name in _SIGNALS:
        number = _SIGNALS[name]
    else:
        fail(ExitCode.USAGE, f"--signal {sig}: no such signal")
    for record in [resolve(registry, vm) for vm in vms]:
        if record.vmm is None or not record.vmm.signal(number):
            fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is not running")
        out.print(record.vm_id)


def _patch_state(registry: Registry, vm: str, state: models.VmState) -> None:
    record = resolve(registry, vm)
    current = live_state(record)
    if current not in (VmState.RUNNING, VmState.PAUSED) or record.socket is None:
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is {current.value}")
    with Client(record.socket, timeout=5.0) as client:
        client.patch_vm(state)
    out.print(record.vm_id)


def pause(ctx: typer.Context, vms: VmsArgument) -> None:
    """Pause microVMs' vCPUs."""
    for vm in vms:
        _patch_state(ctx.obj, vm, models.VmState.PAUSED)


def resume(ctx: typer.Context, vms: VmsArgument) -> None:
    """Resume paused microVMs."""
    for vm in vms:
        _patch_state(ctx.obj, vm, models.VmState.RESUMED)


def rm(
    ctx: typer.Context,
    vms: VmsArgument,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Kill running microVMs first.")
    ] = False,
) -> None:
    """Remove microVMs and everything they had: process, files, jail, cgroups, network."""
    registry: Registry = ctx.obj
    for record in [resolve(registry, vm) for vm in vms]:
        remove(registry, record, force=force)
        out.print(record.vm_id)


def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only say what would be reaped.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Reap what crashed or exited microVMs left: processes, files, jails, cgroups, network.

    A VM is reaped when its VMM exited (or never started), or when the
    foreground `firec run` that owned it died (then its VMM is killed).
    Running detached VMs are left alone.
    """
    registry: Registry = ctx.obj
    reaped: list[dict[str, Any]] = []
    for entry in reap_abandoned(registry, dry_run=dry_run):
        item: dict[str, Any] = {"id": entry.vm_id, "reason": entry.reason}
        item.update({"error": entry.error} if entry.error else {"done": entry.done})
        reaped.append(item)
    if not dry_run:
        reaped += _reap_orphan_networks(registry, ctx.meta.get(NETWORK_STATE))
        registry.prune_locks()
    if as_json:
        print_json(reaped)
    elif reaped:
        rows = [
            [e["id"], e.get("reason", ""), ", ".join(e.get("done", [])) or e.get("error", "")]
            for e in reaped
        ]
        out.print(table(["ID", "WHY", "WHAT WAS DONE" if not dry_run else "WOULD REAP"], rows))
    else:
        err.print("[dim]nothing to reap[/]")
    if any("error" in e for e in reaped):
        raise typer.Exit(int(ExitCode.ERROR))


def _network_dirs(registry: Registry, given: Path | None) -> list[Path]:
    """Where the network state of this registry's VMs is, for ``firec gc`` to look.

    The command line keeps it in the registry's ``network/`` when it is
    given a state directory (``given``), and otherwise where SDK programs
    keep it too unless ``Config.state_dir`` says otherwise:
    :func:`firec._statedirs.network_dir` (``/var/lib/firec`` for root).
    """
    return list(dict.fromkeys([*([given] if given is not None else []), _statedirs.network_dir()]))


def _reap_orphan_networks(registry: Registry, given: Path | None) -> list[dict[str, Any]]:
    """Network set-ups recorded in firec's state whose VM has no record (a crash in between).

    A network whose owner (the process that set it up) still runs is left
    alone: it belongs to a live program that keeps no host record. So is one
    in the shared default directory whose VM the default registry records
    (a detached ``firec run`` without a state directory: its owner has exited).
    """
    from firec.network import teardown_network
    from firec.network.record import network_owner

    default = Registry(_statedirs.default_registry_dir())
    entries: list[dict[str, Any]] = []
    for state_dir in _network_dirs(registry, given):
        records_dir = state_dir / "networks"
        shared = state_dir != given and default.root != registry.root
        registries = [registry, default] if shared else [registry]
        for path in sorted(records_dir.glob("*.json")) if records_dir.is_dir() else []:
            vm_id = path.stem
            if _recorded(vm_id, registries):
                continue
            entry: dict[str, Any] = {"id": vm_id, "reason": "a network without a microVM"}
            try:
                with registry.lock(vm_id, timeout=5.0):
                    owner = network_owner(vm_id, state_dir=state_dir)
                    if _recorded(vm_id, registries) or (owner is not None and owner.alive()):
                        continue
                    teardown_network(vm_id, state_dir=state_dir)
                    entry["done"] = ["tore its network down"]
            except FirecError as exc:
                entry["error"] = str(exc)
            entries.append(entry)
    return entries


def _recorded(vm_id: str, registries: list[Registry]) -> bool:
    return any(registry.path(vm_id).exists() for registry in registries)
