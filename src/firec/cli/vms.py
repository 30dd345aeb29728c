"""The VMs the command line manages: finding them by id, their live state, stopping them."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firec.api._sync.client import Client
from firec.cli.output import ExitCode, fail
from firec.errors import FirecError
from firec.host.registry import Registry, VmRecord, reap
from firec.vm._sync.machine import Machine
from firec.vm.guest_agent import hide_tokens

__all__ = ["VmState", "describe", "live_state", "remove", "resolve", "stop"]


class VmState(enum.StrEnum):
    """What ``firec ls`` shows in its STATE column."""

    STARTING = "starting"
    NOT_STARTED = "not started"
    RUNNING = "running"
    PAUSED = "paused"
    UNRESPONSIVE = "unresponsive"
    EXITED = "exited"


def resolve(registry: Registry, vm: str) -> VmRecord:
    """The record of the VM named ``vm`` (its id, or a unique start of it)."""
    found = registry.find(vm)
    if not found:
        fail(
            ExitCode.NO_SUCH_VM,
            f"no microVM {vm!r} in {registry.vms_dir}",
            "`firec ls` lists them",
        )
    if len(found) > 1:
        fail(
            ExitCode.USAGE,
            f"{vm!r} is the start of several microVM ids: {', '.join(r.vm_id for r in found)}",
            "give more of the id",
        )
    return found[0]


def live_state(record: VmRecord, timeout: float = 1.0) -> VmState:
    """The VM's state now: from its process, then its API."""
    if not record.vmm_alive():
        if record.vmm is None and record.controller_alive():
            return VmState.STARTING
        return VmState.EXITED
    if record.socket is None:
        return VmState.STARTING
    try:
        with Client(record.socket, timeout=timeout) as client:
            state = client.get_instance_info().state.value
    except FirecError:
        return VmState.UNRESPONSIVE
    return {
        "Running": VmState.RUNNING,
        "Paused": VmState.PAUSED,
        "Not started": VmState.NOT_STARTED,
    }.get(state, VmState.UNRESPONSIVE)


@dataclass(frozen=True)
class Summary:
    """One VM as ``ls`` shows it."""

    record: VmRecord
    state: VmState

    @property
    def mode(self) -> str:
        """``detached``, ``foreground``, or ``orphaned`` (its controller died)."""
        if self.state is not VmState.EXITED and self.record.abandoned():
            return "orphaned"
        return "detached" if self.record.detached else "foreground"

    @property
    def addresses(self) -> list[str]:
        """The guest addresses firec leased."""
        network = self.record.network
        if network is None:
            return []
        return [str(i["address"]) for i in network.interfaces if i.get("address")]


def describe(record: VmRecord, state: VmState | None = None) -> dict[str, Any]:
    """The VM as JSON-ready data: the record, its live state and mode (agent tokens hidden)."""
    summary = Summary(record, state or live_state(record))
    config = record.config
    machine = config.get("machine", {})
    return {
        "id": record.vm_id,
        "state": summary.state.value,
        "mode": summary.mode,
        "pid": record.vmm.pid if record.vmm is not None else None,
        "vcpus": machine.get("vcpu_count", 1),
        "memory_mib": machine.get("mem_size_mib", 128),
        "addresses": summary.addresses,
        "created": record.created,
        "socket": record.socket,
        "console": record.console,
        "log": record.log,
        "record": hide_tokens(record.to_dict()),
    }


def stop(record: VmRecord, *, timeout: float, term_timeout: float) -> str:
    """Stop the VMM: Ctrl+Alt+Del, then SIGTERM, then SIGKILL; say how it ended."""
    vmm = record.vmm
    if vmm is None or not vmm.alive():
        return "was not running"
    try:
        machine = Machine.connect(record.socket or "", pid=vmm.pid, timeout=2.0)
    except FirecError:
        # no API (not ready, or wedged): signals alone
        if vmm.signal(signal.SIGTERM) and vmm.wait_gone(term_timeout):
            return "stopped (SIGTERM)"
        vmm.signal(signal.SIGKILL)
        vmm.wait_gone(10.0)
        return "killed (SIGKILL)"
    try:
        machine.shutdown(timeout=timeout, term_timeout=term_timeout)
    finally:
        machine.client.close()
    return "stopped"


def remove(registry: Registry, record: VmRecord, *, force: bool) -> list[str]:
    """Remove the VM and all it had; a running VM only with ``force``."""
    with registry.lock(record.vm_id):
        current = registry.load(record.vm_id)
        if current is None:
            return ["already removed"]
        if current.vmm_alive() and not force:
            fail(
                ExitCode.WRONG_STATE,
                f"microVM {record.vm_id} is running",
                f"stop it first (firec stop {record.vm_id}), or remove it anyway with -f",
            )
        if not current.vmm_alive() and current.controller_alive() and not force:
            assert current.controller is not None
            fail(
                ExitCode.WRONG_STATE,
                f"microVM {record.vm_id} belongs to process {current.controller.pid}, which "
                "still runs (it is starting the VM, or will remove it when done)",
                "wait for it, or remove it anyway with -f",
            )
        return reap(registry, current)


def console_path(record: VmRecord) -> Path:
    """The console file of a VM, or a usage error when its console goes elsewhere."""
    if record.console is None:
        fail(
            ExitCode.WRONG_STATE,
            f"the console of microVM {record.vm_id} does not go to a file "
            "(it was started in the foreground, on that terminal)",
        )
    return Path(record.console)
