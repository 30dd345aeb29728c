"""Starting a microVM from the command line, and attending it in the foreground.

:func:`start_vm` claims the VM's id in the registry, then makes the VM
(:func:`boot_machine`, or a restore), and removes all of it if that fails;
:func:`detach_or_run_foreground` then prints the detached VM, or waits for
it in the foreground, stopping it on Ctrl-C (or SIGTERM, SIGHUP) and
removing everything it had. ``firec run``, ``restore`` and ``clone`` start
their VMs here.

Example::

    >>> len(new_vm_id())
    12
"""

from __future__ import annotations

import contextlib
import secrets
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import typer

from firec.cli.output import ExitCode, err, out, print_json
from firec.cli.vms import describe
from firec.errors import FirecError, MachineError
from firec.host.registry import Registration, Registry, VmRecord, reap
from firec.vm._launch import plan
from firec.vm._sync.machine import Machine
from firec.vm.config import Config

__all__ = [
    "StartedVm",
    "boot_machine",
    "detach_or_run_foreground",
    "new_vm_id",
    "run_foreground",
    "start_vm",
]


def new_vm_id() -> str:
    """A random microVM id: 12 hex digits."""
    return secrets.token_hex(6)


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
