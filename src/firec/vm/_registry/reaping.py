"""Reaping: removing a microVM and everything it had, from its record alone.

:func:`reap` is what ``firec gc``, ``firec rm`` and a claim of a dead VM's id
do: kill the VMM (:func:`kill_vmm`, only the recorded process, or one
:func:`~firec.host.registry.find_unrecorded_vmm` finds), remove its socket,
files, jail and cgroups, tear its network down, then forget the record.

Example::

    from firec.host.registry import Registry, reap

    registry = Registry()
    for record in registry.records():
        if record.stale():
            with registry.lock(record.vm_id):
                print(record.vm_id, reap(registry, record))
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from firec.errors import FirecError, MachineError, NetworkError
from firec.vm._launch import cleanup
from firec.vm._registry.records import VmRecord
from firec.vm._registry.unrecorded import find_unrecorded_vmm
from firec.vm.process import ProcessRef, wait_until

__all__ = [
    "REAP_TIMEOUT",
    "Reaped",
    "RecordStore",
    "kill_vmm",
    "reap",
    "reap_abandoned",
    "reap_reason",
]

#: Seconds to wait for a killed VMM to be reaped, and its cgroups to be free.
REAP_TIMEOUT = 3.0


class RecordStore(Protocol):
    """What :func:`reap` uses of a :class:`~firec.host.registry.Registry`."""

    def path(self, vm_id: str) -> Path:
        """The record file of ``vm_id``."""
        ...

    def remove(self, vm_id: str) -> None:
        """Forget ``vm_id``."""
        ...


def kill_vmm(record: VmRecord, timeout: float = 10.0) -> bool:
    """SIGKILL the recorded VMM (and a never-recorded one) and wait; whether one ran."""
    killed = False
    refs = [record.vmm] if record.vmm is not None else []
    if record.vmm is None:
        refs += [r for pid in find_unrecorded_vmm(record) if (r := ProcessRef.of(pid))]
    for ref in refs:
        if ref.signal(signal.SIGKILL):
            killed = True
            if not ref.wait_gone(timeout):
                raise MachineError(
                    f"microVM {record.vm_id}: its VMM (pid {ref.pid}) survived SIGKILL for "
                    f"{timeout:g}s"
                )
        # not our child: its parent (init) reaps it; until then its cgroups stay busy
        wait_until(ref.reaped, REAP_TIMEOUT)
    return killed


def reap(registry: RecordStore, record: VmRecord) -> list[str]:
    """Remove a VM and everything it had; return what was done, for people.

    Kills the VMM if it still runs (only the recorded process: a reused pid is
    left alone), removes the socket, fifos, VM directory, jail and cgroups
    (:func:`firec.vm._launch.cleanup`), tears the network down
    (:func:`firec.network.teardown_network`: taps, namespace, nft rules,
    leases), then the record. Call it holding ``registry.lock(record.vm_id)``.

    Raises:
        MachineError: something could not be removed; the record is kept
            (naming what is left), so that reaping again retries.
    """
    done = []
    if kill_vmm(record):
        done.append("killed the VMM")
    launch = record.launch()
    left = cleanup(launch)
    if left and launch.cgroups:
        # a cgroup stays busy for a moment after its last task was reaped
        wait_until(lambda: not cleanup(launch), REAP_TIMEOUT)
        left = cleanup(launch)
    for path in record.files:
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"{path}: {exc.strerror}")
    if not left:
        done.append("removed its files")
    if record.network is not None:
        from firec.network import teardown_network

        try:
            if teardown_network(record.vm_id, state_dir=record.network.state_dir):
                done.append("tore its network down")
        except (NetworkError, FirecError) as exc:
            left.append(str(exc))
    if left:
        raise MachineError(
            f"microVM {record.vm_id}: could not remove everything (record kept at "
            f"{registry.path(record.vm_id)}): " + "; ".join(left)
        )
    registry.remove(record.vm_id)
    done.append("forgot it")
    return done


class Registry(RecordStore, Protocol):
    """What :func:`reap_abandoned` uses of a :class:`~firec.host.registry.Registry`."""

    def records(self) -> list[VmRecord]:
        """Every record."""
        ...

    def load(self, vm_id: str) -> VmRecord | None:
        """The record of ``vm_id``, if there is one."""
        ...

    def lock(self, vm_id: str, timeout: float = ...) -> AbstractContextManager[None]:
        """Hold ``vm_id``'s lock."""
        ...


@dataclass(frozen=True)
class Reaped:
    """One VM :func:`reap_abandoned` reaped (or would reap, or failed to).

    Attributes:
        vm_id: the VM.
        reason: why it was reaped (:func:`reap_reason`).
        done: what was done, for people (empty for a dry run).
        error: why reaping failed, if it did (its record is kept).
    """

    vm_id: str
    reason: str
    done: list[str] = field(default_factory=list)
    error: str = ""


def reap_reason(record: VmRecord) -> str | None:
    """Why ``firec gc`` reaps the VM of ``record``, or ``None`` to leave it."""
    if record.stale():
        return "its VMM exited" if record.vmm is not None else "it never started"
    if record.abandoned():
        return f"its controller (pid {record.controller.pid if record.controller else '?'}) died"
    return None


def reap_abandoned(registry: Registry, *, dry_run: bool = False) -> list[Reaped]:
    """Reap every VM of ``registry`` whose VMM exited, or whose controller died while it needed one.

    Each is judged again under its lock, then reaped (:func:`reap`); running
    detached VMs are left alone. With ``dry_run`` nothing is done.
    """
    return list(_reap_each(registry, dry_run))


def _reap_each(registry: Registry, dry_run: bool) -> Iterator[Reaped]:
    for record in registry.records():
        if reap_reason(record) is None:
            continue
        try:
            with registry.lock(record.vm_id, timeout=5.0):
                current = registry.load(record.vm_id)
                reason = reap_reason(current) if current is not None else None
                if current is None or reason is None:
                    continue
                yield Reaped(record.vm_id, reason, [] if dry_run else reap(registry, current))
        except FirecError as exc:
            yield Reaped(record.vm_id, reap_reason(record) or "", error=str(exc))
