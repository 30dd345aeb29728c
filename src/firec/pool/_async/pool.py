"""A warm pool of microVMs: restored from one snapshot ahead of time, handed out one each.

:class:`AsyncPool` keeps ``size`` microVMs restored from a snapshot and
running, and hands each out once: :meth:`~AsyncPool.acquire` returns a
running :class:`~firec.AsyncMachine` of the caller's own, whose
:meth:`~firec.AsyncMachine.delete` (or leaving its ``async with`` block)
removes it and everything it had. A VM handed out never comes back: code that
ran in it cannot reach the next caller. A refill task on the event loop (one
per pool, never one per VM) restores replacements in the background, within
``max_size`` VMs and a memory budget, and replaces a ready VM that died or
stopped answering before anyone gets it. :class:`firec.Pool` is the blocking
twin (its refill is one thread).

Each VM is a machine of its own: its own id, API socket, VM directory (and
jail), vsock socket (jailed, or ``vsock_override`` on Firecracker 1.16+), its
own network plan's tap, namespace and address (``network``), its own MMDS
document (``mmds``). A guest that runs firec's agent is also given its own
identity before it is ready (:meth:`~firec.AsyncMachine.renew_identity`: the
clock now, a fresh random seed for its kernel, its id as hostname, MACs
derived from its id), so that no two VMs of a pool share random state or a
MAC. Example::

    import asyncio, firec

    async def main() -> None:
        async with firec.AsyncPool("/srv/snaps/python", size=4) as pool:
            async with await pool.acquire() as vm:  # a running VM, in ~1 ms
                print((await vm.exec(["python3", "-c", "print(1 + 1)"])).stdout)
            print(pool.stats)

    asyncio.run(main())
"""

# This file is the one source of both flavours: pool.py (under the synchronous
# firec.Pool) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from firec._proc import ProcessRef
from firec.errors import FirecError, MachineError, PoolEmptyError, ValidationError
from firec.pool._async import io
from firec.pool.stats import Counters, PoolStats, WhenEmpty
from firec.snapshots.snapshot import Snapshot
from firec.vm._async.machine import AsyncMachine
from firec.vm._restore import own_macs
from firec.vm.config import Config
from firec.vm.console import Console

if TYPE_CHECKING:
    from firec.network import NetworkPlan
    from firec.vm.jailer import JailerConfig

__all__ = ["AsyncPool"]

_log = logging.getLogger("firec.pool")

#: Seconds the refill waits after a failed restore, doubling up to ``MAX_BACKOFF``.
BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: Seconds a ready VM has to answer the health check.
HEALTH_TIMEOUT = 1.0


class AsyncPool:
    """Running microVMs restored from ``snapshot``, each handed out once.

    Args:
        snapshot: what every VM is restored from (a :class:`~firec.Snapshot`
            or its directory).
        size: how many VMs to keep ready.
        max_size: how many VMs the pool may hold at once, ready or being
            restored (default: ``size``); restores for callers that found the
            pool empty count too.
        config: how each VM runs (binary, jailer, workdir, console, logs); its
            ``vm_id`` is the prefix of the VMs' ids (``<prefix>-<n>``).
            Default: the snapshot's own (:meth:`Snapshot.config`).
        jailer: run each VM under the jailer, each in a jail of its own.
        network: a network plan each VM's interfaces get (its own tap,
            namespace and leased address; for clones of one snapshot give
            :class:`~firec.network.RoutedNetwork` the snapshot's
            ``guest_address``).
        configure: ``configure(n, config)`` changes the config of the n-th VM.
        vsock_override: each VM's vsock socket (Firecracker 1.16+), with ``{i}``
            for the VM's number; a jailed VM has its own without it.
        mmds: ``mmds(n, vm_id)`` gives the n-th VM's MMDS document (its
            hostname, a token of its own...), put when it is restored.
        on_acquire: called with each VM as it is handed out (the asyncio
            pool's may be a coroutine function).
        when_empty: what :meth:`acquire` does when no VM is ready (see
            :class:`~firec.pool.WhenEmpty`): restore one now (the default),
            wait, or fail.
        memory_budget: bytes of guest memory the pool may hold at once (ready
            and being restored); ``None``: no limit but ``max_size``.
        health_interval: seconds between two health checks of the ready VMs
            (each must answer its API within a second).
        restore: other keyword arguments of :meth:`AsyncMachine.restore`.

    Raises:
        ValidationError: a size, budget or interval that makes no sense.
    """

    def __init__(
        self,
        snapshot: Snapshot | str | os.PathLike[str],
        size: int = 2,
        max_size: int | None = None,
        *,
        config: Config | None = None,
        jailer: JailerConfig | None = None,
        network: NetworkPlan | None = None,
        configure: Callable[[int, Config], Config] | None = None,
        vsock_override: str | None = None,
        mmds: Callable[[int, str], Mapping[str, Any]] | None = None,
        on_acquire: Callable[[AsyncMachine], Any] | None = None,
        when_empty: WhenEmpty | str = WhenEmpty.RESTORE,
        memory_budget: int | None = None,
        health_interval: float = 1.0,
        **restore: Any,
    ) -> None:
        self.snapshot = snapshot if isinstance(snapshot, Snapshot) else Snapshot.open(snapshot)
        max_size = size if max_size is None else max_size
        if size < 0:
            raise ValidationError("size", f"must be 0 or more, not {size}")
        if max_size < max(size, 1):
            raise ValidationError("max_size", f"must be at least size ({size}) and 1")
        if memory_budget is not None and memory_budget < self.snapshot.memory_size:
            raise ValidationError(
                "memory_budget",
                f"{memory_budget} bytes hold not even one VM of {self.snapshot.memory_size}",
            )
        if health_interval <= 0:
            raise ValidationError("health_interval", f"must be positive, not {health_interval}")
        self.size = size
        self.max_size = max_size
        self.when_empty = WhenEmpty(when_empty)
        self.memory_budget = memory_budget
        self.health_interval = health_interval
        base = config or self.snapshot.config()
        if not base.network_interfaces:  # the snapshot's devices, whatever the config says
            base = base.replace(network_interfaces=self.snapshot.config().network_interfaces)
        if jailer is not None:
            base = base.replace(jailer=jailer)
        self._base = base
        self._prefix = base.vm_id if config is not None else f"pool-{uuid.uuid4().hex[:8]}"
        self._network = network
        self._configure = configure
        self._vsock_override = vsock_override
        self._mmds = mmds
        self._on_acquire = on_acquire
        self._restore = restore
        self._idle: deque[AsyncMachine] = deque()
        self._dead: list[AsyncMachine] = []  # found dead when taken: the refill deletes them
        self._numbers = itertools.count()
        self._counters = Counters()
        self._wanted = io.Signal()  # the refill should look again
        self._ready = io.Signal()  # a VM became ready
        self._refill: io.Background | None = None
        self._closed = False

    @classmethod
    async def from_config(
        cls,
        config: Config,
        directory: str | os.PathLike[str],
        *,
        ready: str | Callable[[AsyncMachine], Any] | None = None,
        ready_timeout: float = 60.0,
        **options: Any,
    ) -> Self:
        """Boot ``config`` once, wait until it is ready, snapshot it, and pool restores of that.

        ``ready`` says when the VM is ready to be snapshotted: a text its
        serial console prints (a line that contains it), ``"agent"`` (its guest
        agent answers: :meth:`AsyncMachine.wait_ready`), or a function called
        with the machine that returns when it is (the asyncio pool's may be a
        coroutine function); ``None``: as soon as it runs. The
        snapshot goes into ``directory`` (new, or empty) and stays there for
        other pools; the booted VM is deleted. ``options`` are the pool's
        (``size``, ``max_size``...). The pool's VMs run as ``config`` says
        (its ``vm_id`` is their prefix). Example::

            pool = await AsyncPool.from_config(config, "/srv/snaps/py", ready="agent", size=8)

        Raises:
            MachineError: the VM did not become ready within ``ready_timeout``
                (nothing is left but ``directory``, empty).
        """
        booted = config
        seen = io.Signal()
        if isinstance(ready, str) and ready != "agent":
            wanted, given = ready, config.console

            def on_line(line: str) -> None:
                if wanted in line:
                    seen.set()
                if given is not None and given.on_line is not None:
                    given.on_line(line)

            booted = config.replace(console=Console.callback(on_line))
        machine = await AsyncMachine.create(booted)
        try:
            await machine.start()
            if ready == "agent":
                await machine.wait_ready(timeout=ready_timeout)
            elif isinstance(ready, str):
                if not await seen.wait(ready_timeout):
                    raise MachineError(
                        f"microVM {machine.vm_id}: its console printed no line with "
                        f"{ready!r} within {ready_timeout:g}s",
                        log_tail=machine.last_lines(),
                    )
            elif ready is not None:
                await io.call(ready, machine)
            snapshot = await machine.snapshot(directory)
        finally:
            await machine.delete()
        return cls(snapshot, config=config, **options)

    # -- the caller's side -------------------------------------------------------------

    async def start(self, *, wait: bool = True, timeout: float | None = 60.0) -> None:
        """Start the refill; with ``wait``, return once ``size`` VMs are ready.

        Raises:
            PoolError: the pool was closed, or (``wait``) the VMs were not ready
                within ``timeout`` s: the last restore failure is named.
        """
        if self._closed:
            raise PoolEmptyError("this pool is closed")
        if self._refill is None:
            self._refill = io.background(self._refill_loop, f"firec-pool {self._prefix}")
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._idle) < self.size:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise PoolEmptyError(
                    f"pool {self._prefix}: {len(self._idle)} of {self.size} VMs ready after "
                    f"{timeout:g}s (last failure: {self._counters.last_error or 'none'})"
                )
            self._ready.clear()
            if len(self._idle) < self.size:
                await self._ready.wait(left if left is None else min(left, 0.5))

    async def acquire(
        self, *, timeout: float | None = None, when_empty: WhenEmpty | str | None = None
    ) -> AsyncMachine:
        """A running VM of the caller's own: delete it (or leave its ``async with``) when done.

        A ready VM when there is one (a hit); otherwise, as ``when_empty``
        (default: the pool's) says, one restored now, one waited for (up to
        ``timeout`` s), or :class:`~firec.errors.PoolEmptyError` at once.

        Raises:
            PoolEmptyError: none was ready, and the caller chose to fail, or to
                wait and none came within ``timeout``.
            FirecError: the restore for the caller failed (nothing is left).
        """
        if self._closed:
            raise PoolEmptyError(f"pool {self._prefix} is closed")
        policy = self.when_empty if when_empty is None else WhenEmpty(when_empty)
        machine = self._take()
        if machine is not None:
            self._counters.add("hits")
            return await self._hand_out(machine)
        self._counters.add("misses")
        if policy is WhenEmpty.FAIL:
            raise PoolEmptyError(
                f"pool {self._prefix}: no VM is ready ({self._counters.restoring} being restored)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if policy is WhenEmpty.RESTORE and self._has_room():
                return await self._hand_out(await self._restore_one())
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise PoolEmptyError(
                    f"pool {self._prefix}: no VM became ready within {timeout:g}s "
                    f"(last restore failure: {self._counters.last_error or 'none'})"
                )
            self._ready.clear()
            self._wanted.set()
            if not self._idle:
                await self._ready.wait(left if left is None else min(left, 0.5))
            if self._closed:
                raise PoolEmptyError(f"pool {self._prefix} is closed")
            machine = self._take()
            if machine is not None:
                return await self._hand_out(machine)

    @property
    def stats(self) -> PoolStats:
        """The pool's figures now (:class:`~firec.pool.PoolStats`)."""
        return self._counters.snapshot(len(self._idle))

    def __len__(self) -> int:
        """How many VMs are ready."""
        return len(self._idle)

    async def close(self) -> None:
        """Stop the refill and delete every VM still in the pool (not those handed out)."""
        self._closed = True
        self._wanted.set()
        self._ready.set()
        if self._refill is not None:
            await self._refill.join()
        while self._idle:
            machine = self._idle.popleft()
            await self._discard(machine)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- handing out -------------------------------------------------------------------

    def _take(self) -> AsyncMachine | None:
        """A ready VM whose VMM still runs (the dead ones are dropped for the refill)."""
        while self._idle:
            machine = self._idle.popleft()
            self._wanted.set()  # one fewer: the refill restores another
            if _running(machine):
                return machine
            self._counters.add("replaced")
            self._dead.append(machine)
        return None

    async def _hand_out(self, machine: AsyncMachine) -> AsyncMachine:
        self._counters.add("handed_out")
        if self._on_acquire is not None:
            try:
                await io.call(self._on_acquire, machine)
            except BaseException:
                await machine.delete()
                raise
        return machine

    # -- the refill --------------------------------------------------------------------

    def _has_room(self) -> bool:
        """Whether one more VM fits in ``max_size`` and the memory budget."""
        held = len(self._idle) + self._counters.restoring
        if held >= self.max_size:
            return False
        if self.memory_budget is None:
            return True
        return (held + 1) * self.snapshot.memory_size <= self.memory_budget

    async def _refill_loop(self) -> None:
        delay = BACKOFF
        while not self._closed:
            while self._dead:
                await self._discard(self._dead.pop())
            await self._check_health()
            while not self._closed and len(self._idle) < self.size and self._has_room():
                try:
                    machine = await self._restore_one()
                except Exception as exc:  # said in the stats and the log; tried again later
                    _log.warning("pool %s: a restore failed: %s", self._prefix, exc)
                    if await self._wanted.wait(delay):
                        self._wanted.clear()
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                delay = BACKOFF
                if self._closed:
                    await self._discard(machine)
                    break
                self._idle.append(machine)
                self._ready.set()
            if self._closed:
                break
            await self._wanted.wait(self.health_interval)
            self._wanted.clear()

    async def _restore_one(self) -> AsyncMachine:
        """Restore the next VM, with its identity; counted while it is being restored."""
        number = next(self._numbers)
        config = self._config_for(number)
        self._counters.add("restoring")
        started = time.monotonic()
        try:
            override = self._vsock_override
            machine = await AsyncMachine.restore(
                self.snapshot,
                config,
                vsock_override=override.format(i=number) if override is not None else None,
                **self._restore,
            )
            try:
                if self._mmds is not None:
                    await machine.client.put_mmds(self._mmds(number, machine.vm_id))
                if machine.runs_agent:
                    await machine.renew_identity()
            except BaseException:
                await machine.delete()
                raise
        except Exception as exc:
            self._counters.failed(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._counters.add("restoring", -1)
        self._counters.latencies.append(time.monotonic() - started)
        return machine

    def _config_for(self, number: int) -> Config:
        config = own_macs(self.snapshot, self._base.replace(vm_id=f"{self._prefix}-{number}"))
        if self._network is not None:
            plan = self._network
            config = config.replace(
                network_interfaces=tuple(
                    dataclasses.replace(i, network=plan) for i in config.network_interfaces
                )
            )
        if self._configure is not None:
            config = self._configure(number, config)
        return config

    async def _check_health(self) -> None:
        """Replace the ready VMs that died or do not answer their API."""
        for machine in list(self._idle):
            healthy = _running(machine)
            if healthy:
                try:
                    await machine.client.get_instance_info(timeout=HEALTH_TIMEOUT)
                except FirecError:
                    healthy = False
            if healthy:
                continue
            try:
                self._idle.remove(machine)
            except ValueError:
                continue  # handed out meanwhile: its caller has it now
            self._counters.add("replaced")
            _log.warning("pool %s: %s stopped answering; replaced", self._prefix, machine.vm_id)
            await self._discard(machine)

    async def _discard(self, machine: AsyncMachine) -> None:
        try:
            await machine.delete()
        except FirecError as exc:
            _log.warning("pool %s: could not delete %s: %s", self._prefix, machine.vm_id, exc)


def _running(machine: AsyncMachine) -> bool:
    """Whether the VMM of ``machine`` runs: not exited, and not a zombie either (its exit
    status may not be known yet while another thread waits for it)."""
    pid = machine.pid
    return machine.exit_status is None and pid is not None and ProcessRef.of(pid) is not None
