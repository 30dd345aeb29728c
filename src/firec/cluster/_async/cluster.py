"""The driver's side of a cluster: :class:`AsyncCluster`.

This file is the one source of both flavours: ``scripts/unasync.py`` writes
``_sync/cluster.py`` (:class:`firec.cluster.Cluster`) from it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from firec.cluster import _ray
from firec.cluster._async import io
from firec.cluster._async.remote import AsyncRemoteMachine
from firec.cluster._errors import actor_died
from firec.cluster.hosts import HostInfo, VmInfo, VmState
from firec.cluster.placement import Request, place, place_many
from firec.cluster.snapshots import ClusterSnapshot, CopyFromHost, SnapshotStore
from firec.errors import ClusterError, HostLostError, NoFitError

__all__ = ["AsyncCluster"]

#: How old (seconds) the driver's view of the hosts may be before a VM that
#: fits nowhere in it makes it look again.
VIEW_TTL = 1.0


class AsyncCluster:
    """microVMs on the KVM hosts of a Ray cluster, driven from this process.

    Made by :meth:`connect`. Each alive node has a host actor that owns its
    VMs (:mod:`firec.cluster._host`); this object places VMs on them
    (:mod:`firec.cluster.placement`) and hands back :class:`AsyncRemoteMachine`
    objects. The VMs it makes are deleted when this driver exits (or calls
    :meth:`close`), unless made ``detached=True``. Example::

        import asyncio, firec
        from firec.cluster import AsyncCluster

        async def main() -> None:
            async with await AsyncCluster.connect() as cluster:
                vm = await cluster.run(firec.Config.builder("vm1", "vmlinux").build())
                print(vm.host, await vm.state())

        asyncio.run(main())

    Attributes:
        store: where snapshots are kept (:class:`~firec.cluster.snapshots.CopyFromHost`
            unless given).
        namespace: the Ray namespace of firec's actors.
        owner: this driver's id, as hosts know it.
    """

    def __init__(
        self,
        *,
        namespace: str,
        store: SnapshotStore,
        owner: str,
        link: Any,
        book: Any,
        started_ray: bool,
    ) -> None:
        self.namespace = namespace
        self.store = store
        self.owner = owner
        self._link = link
        self._book = book
        self._started_ray = started_ray
        self._handles: dict[str, Any] = {}
        self._view: dict[str, HostInfo] = {}
        self._mine: dict[tuple[str, str], AsyncRemoteMachine] = {}
        self._seen_at = 0.0
        self._closed = False

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        store: SnapshotStore | None = None,
        namespace: str = _ray.NAMESPACE,
    ) -> AsyncCluster:
        """Join the Ray cluster at ``address`` and its firec hosts (starting them where missing).

        ``address`` ``None``: ``$RAY_ADDRESS``, else a new local Ray (one
        host: this machine). A process already connected to Ray keeps its
        connection. ``store``: where snapshots go and how other hosts get
        them (default: :class:`~firec.cluster.snapshots.CopyFromHost`).
        """
        started = _ray.join(address, namespace)
        book = _ray.book(namespace)
        owner, link = _ray.new_link()
        cluster = cls(
            namespace=namespace,
            store=store or CopyFromHost(),
            owner=owner,
            link=link,
            book=book,
            started_ray=started,
        )
        await cluster.hosts()
        return cluster

    # -- hosts -------------------------------------------------------------

    async def hosts(self) -> list[HostInfo]:
        """Every host: its capacity and what it runs; an unusable one with the reason.

        Nodes that joined since are given a host actor; a host that died is
        reported unusable (and its VMs lost).
        """
        handles = _ray.host_actors(self.namespace)
        answers = await io.get_all([h.info.remote() for h in handles.values()])
        registered = []
        view: dict[str, HostInfo] = {}
        named: dict[str, Any] = {}
        for (node_id, handle), answer in zip(handles.items(), answers, strict=True):
            if isinstance(answer, HostInfo):
                view[answer.name] = answer
                named[answer.name] = handle
                registered.append(handle.register.remote(self.owner, self._link))
            else:
                name = node_id[:8]
                why = f"its host actor failed: {answer}"
                view[name] = HostInfo(name=name, node_id=node_id, usable=False, reason=why)
        await io.get_all(registered)
        self._view, self._handles = view, named
        self._seen_at = time.monotonic()
        return sorted(view.values(), key=lambda h: h.name)

    def _host_died(self, name: str, why: str) -> None:
        """Note that host ``name`` died: nothing is placed on it."""
        if name in self._view:
            self._view[name] = dataclasses.replace(
                self._view[name], usable=False, reason=f"it died: {why}"
            )

    def _released(self, machine: AsyncRemoteMachine) -> None:
        """A VM of this driver was deleted: its room is free again."""
        self._mine.pop((machine.host, machine.vm_id), None)
        self._took(machine.host, machine.vcpus, machine.memory_mib, -1)

    def _took(self, host: str, vcpus: int, memory_mib: int, count: int = 1) -> None:
        """``count`` more VMs of ``vcpus`` and ``memory_mib`` on ``host`` in our view (fewer,
        when negative)."""
        if host in self._view:
            self._view[host] = self._view[host].taking(vcpus, memory_mib, count)

    # -- making VMs --------------------------------------------------------

    async def create(
        self,
        config: Any,
        *,
        host: str | None = None,
        labels: Mapping[str, str] | None = None,
        detached: bool = False,
    ) -> AsyncRemoteMachine:
        """Create a VM of ``config`` (a :class:`firec.Config`) on the host it fits tightest on.

        The VM is not booted: :meth:`AsyncRemoteMachine.start` boots it, or
        :meth:`run` does both in one call. ``host`` names the host; ``labels``
        keeps to hosts that have them. The config's paths (kernel, drives) are
        paths on the chosen host. ``detached``: the VM outlives this driver.

        Raises:
            NoFitError: no host can take it (says what each has free, or why not).
            ConfigError, InUseError, MachineError: as :meth:`firec.AsyncMachine.create`.
        """
        return await self._make("create", config, host, labels, detached)

    async def run(
        self,
        config: Any,
        *,
        host: str | None = None,
        labels: Mapping[str, str] | None = None,
        detached: bool = False,
    ) -> AsyncRemoteMachine:
        """Create a VM of ``config`` and boot it, in one call to its host; the VM, running.

        As :meth:`create` then :meth:`AsyncRemoteMachine.start`, with one round
        trip less, and atomic: a VM that fails to boot is deleted on its host
        before the error is raised here. Example::

            async with await cluster.run(config) as vm:
                print(vm.host, await vm.state())   # Running

        Raises:
            NoFitError: as :meth:`create`.
            ConfigError, InUseError, MachineError, APIError: as
                :meth:`firec.AsyncMachine.create` and :meth:`firec.AsyncMachine.start`.
        """
        return await self._make("run", config, host, labels, detached)

    async def _make(
        self,
        method: str,
        config: Any,
        host: str | None,
        labels: Mapping[str, str] | None,
        detached: bool,
    ) -> AsyncRemoteMachine:
        """Place a VM of ``config`` and have its host make it with actor method ``method``."""
        machine = config.machine
        request = Request(
            vcpus=machine.vcpu_count,
            memory_mib=machine.mem_size_mib,
            host=host,
            labels=dict(labels or {}),
        )
        data = config.to_dict()
        refused: dict[str, str] = {}
        looked_again = False
        while True:
            try:
                chosen = place(request, [h for h in self._view.values() if h.name not in refused])
            except NoFitError as exc:
                if not looked_again and await self._looked_again():
                    looked_again = True
                    continue
                raise NoFitError(request.describe(), {**exc.hosts, **refused}) from None
            # held in our view now, so that creates running beside this one go elsewhere
            self._took(chosen.name, request.vcpus, request.memory_mib)
            handle = self._handles[chosen.name]
            try:
                make = getattr(handle, method)
                info: VmInfo = await io.get(make.remote(data, self.owner, detached))
            except Exception as exc:
                self._took(chosen.name, request.vcpus, request.memory_mib, -1)
                if isinstance(exc, NoFitError):  # another driver took the room: the next host
                    refused[chosen.name] = exc.hosts.get(chosen.name, str(exc))
                    continue
                if actor_died(exc):
                    self._host_died(chosen.name, type(exc).__name__)
                    refused[chosen.name] = f"it died: {type(exc).__name__}"
                    continue
                raise
            return self._remote(info, handle)

    async def _looked_again(self) -> bool:
        """Whether our view was older than :data:`VIEW_TTL` and is now looked at again
        (a placement that found no room: other drivers may have made some since)."""
        if time.monotonic() - self._seen_at <= VIEW_TTL:
            return False
        await self.hosts()
        return True

    def _remote(self, info: VmInfo, handle: Any) -> AsyncRemoteMachine:
        remote = AsyncRemoteMachine(self, info, handle)
        self._mine[(info.host, info.vm_id)] = remote
        return remote

    async def restore(
        self,
        snapshot: ClusterSnapshot,
        n: int = 1,
        *,
        host: str | None = None,
        labels: Mapping[str, str] | None = None,
        detached: bool = False,
    ) -> list[AsyncRemoteMachine]:
        """Start ``n`` VMs from ``snapshot``, on the hosts that can restore it, packed tightly.

        A host can when it has the snapshot's CPU vendor and template and a
        Firecracker that reads its format (:func:`~firec.cluster.placement.snapshot_refusal`);
        one that lacks the snapshot gets it through the store first. Each
        host starts its share as clones (:meth:`firec.AsyncMachine.clone`).
        If any host fails, the VMs already started are deleted.

        Raises:
            NoFitError: they do not all fit; says which rule refused each host.
        """
        request = Request(
            vcpus=snapshot.vcpus,
            memory_mib=snapshot.memory_mib,
            host=host,
            labels=dict(labels or {}),
            snapshot=snapshot,
        )
        try:
            placed = place_many(request, n, list(self._view.values()))
        except NoFitError:
            if not await self._looked_again():
                raise
            placed = place_many(request, n, list(self._view.values()))
        shares: dict[str, int] = {}
        for chosen in placed:
            shares[chosen.name] = shares.get(chosen.name, 0) + 1
            self._took(chosen.name, request.vcpus, request.memory_mib)
        origin = self._handles.get(snapshot.host)
        if origin is None and not self.store.shared and set(shares) != {snapshot.host}:
            raise HostLostError(snapshot.host, cause=f"it holds snapshot {snapshot.name}")
        calls = [
            self._handles[name].restore.remote(
                snapshot, count, self.owner, detached, self.store, origin
            )
            for name, count in shares.items()
        ]
        answers = await io.get_all(calls)
        started = [
            self._remote(info, self._handles[name])
            for name, answer in zip(shares, answers, strict=True)
            if isinstance(answer, list)
            for info in answer
        ]
        failures = [a for a in answers if isinstance(a, BaseException)]
        if failures:
            await io.get_all([m._handle.delete.remote(m.vm_id) for m in started])
            for m in started:
                self._mine.pop((m.host, m.vm_id), None)
            for name, count in shares.items():
                self._took(name, request.vcpus, request.memory_mib, -count)
            raise failures[0]
        return started

    async def get(self, vm_id: str, host: str | None = None) -> AsyncRemoteMachine:
        """A handle on VM ``vm_id`` (on ``host``, if several hosts have one), made by any driver.

        Raises:
            ClusterError: no host has it, or several do and ``host`` is not given.
            HostLostError: its host died.
        """
        found = [v for v in await self.ls() if v.vm_id == vm_id and host in (None, v.host)]
        if not found:
            raise ClusterError(f"no host of the cluster has a microVM {vm_id}")
        if len(found) > 1:
            hosts = ", ".join(v.host for v in found)
            raise ClusterError(f"microVM {vm_id} is on several hosts ({hosts}): name one")
        info = found[0]
        if info.state is VmState.LOST:
            raise HostLostError(info.host, vm_id)
        return AsyncRemoteMachine(self, info, self._handles[info.host])

    # -- the whole cluster -------------------------------------------------

    async def ls(self) -> list[VmInfo]:
        """Every VM of the cluster, with its host; those of a host that died are ``Lost``."""
        names = list(self._handles)
        answers = await io.get_all(
            [self._book.all.remote(), *(self._handles[n].vms.remote() for n in names)]
        )
        booked = answers[0] if isinstance(answers[0], list) else []
        live: dict[str, list[VmInfo]] = {}
        for name, answer in zip(names, answers[1:], strict=True):
            if isinstance(answer, list):
                live[name] = answer
            else:
                self._host_died(name, type(answer).__name__)
        found = [info for infos in live.values() for info in infos]
        # the VMs of dead hosts: those the book knows, and this driver's own (news
        # reaches the book a moment after a VM is made)
        booked += [
            (m.host, m.node_id, m.vm_id, m.vcpus, m.memory_mib)
            for m in self._mine.values()
            if m.host not in live
        ]
        for host, node_id, vm_id, vcpus, memory_mib in dict.fromkeys(booked):
            if host not in live:
                found.append(
                    VmInfo(
                        vm_id=vm_id,
                        host=host,
                        node_id=node_id,
                        state=VmState.LOST,
                        vcpus=vcpus,
                        memory_mib=memory_mib,
                    )
                )
        return sorted(found, key=lambda v: (v.host, v.vm_id))

    async def gc(self) -> list[VmInfo]:
        """Delete, now, the VMs whose driver is gone (not detached ones); return them.

        Hosts do this by themselves within a second or two of a driver's
        end; this does it at once, on every host.
        """
        answers = await io.get_all([h.reap_gone_owners.remote() for h in self._handles.values()])
        return [info for answer in answers if isinstance(answer, list) for info in answer]

    async def close(self) -> None:
        """Delete this driver's VMs that are not detached, and leave the cluster.

        A Ray this call's :meth:`connect` started is shut down too.
        """
        if self._closed:
            return
        self._closed = True
        await io.get_all([h.release_owner.remote(self.owner) for h in self._handles.values()])
        self._mine.clear()
        _ray.end(self._link)
        if self._started_ray:
            import ray

            ray.shutdown()

    async def stop_hosts(self) -> list[str]:
        """Delete every VM of every host and end the host actors and the book (for admins, tests).

        Returns the ids of the VMs deleted. The next :meth:`connect` starts new hosts.
        """
        answers = await io.get_all([h.stop.remote() for h in self._handles.values()])
        for handle in self._handles.values():
            _ray.end(handle)
        _ray.end(self._book)
        self._handles.clear()
        self._view.clear()
        failures = [a for a in answers if isinstance(a, BaseException)]
        if failures:
            raise failures[0]
        return [vm_id for answer in answers for vm_id in answer]

    async def __aenter__(self) -> AsyncCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
