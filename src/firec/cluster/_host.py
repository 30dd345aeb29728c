"""The host actor: one per KVM node, owning the node's microVMs through :class:`firec.AsyncMachine`.

:class:`Host` is a plain class; :mod:`firec.cluster._ray` makes it a Ray
actor (async, ``num_cpus=0``, detached, pinned to its node). Everything it
does runs on its event loop, so hundreds of VMs cost no thread each. It:

* reads its settings where it runs (:meth:`HostSettings.of_this_node`),
  checks what it needs (``/dev/kvm``, a Firecracker) and reports capacity
  (:meth:`info`); an unusable host says why and takes no VM;
* admits a VM only within its vCPUs, memory and VM limit (the authority on
  its capacity: the drivers' view of it is a hint), then creates or restores
  it with its own registry, state and runtime directories;
* tells the cluster's book (:class:`Book`) of every VM it makes and removes,
  so that the VMs of a host that dies are reported lost;
* watches each driver through that driver's link actor: when the driver is
  gone, the VMs it made that were not detached are deleted;
* on start, reaps what an earlier host actor of its node left (VMs whose
  controller died: they are lost already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from firec.cluster._async import io
from firec.cluster.hosts import HostInfo, HostSettings, VmInfo, VmState
from firec.cluster.snapshots import ClusterSnapshot, FileDescription, SnapshotStore, describe_file
from firec.errors import ClusterError, FirecError, NoFitError

__all__ = ["OPERATIONS", "Book", "Host", "Link"]

log = logging.getLogger("firec.cluster")

#: How often a host asks whether the drivers owning its VMs are still there (seconds).
LINK_CHECK = 1.0
#: How long news for the book waits to go with other news (seconds).
BOOK_DELAY = 0.05
#: How long a driver's link may take to answer before the next look.
LINK_TIMEOUT = 10.0

#: What a driver may call on a VM through :meth:`Host.call` (a machine's methods; ``files.*``).
OPERATIONS = frozenset(
    {
        "start",
        "pause",
        "resume",
        "state",
        "wait",
        "shutdown",
        "console_lines",
        "flush_metrics",
        "exec",
        "wait_ready",
        "files.read",
        "files.write",
        "files.stat",
        "files.exists",
        "files.list",
        "files.mkdir",
        "files.remove",
    }
)


@dataclass
class _Held:
    """A VM of this host: its machine (``None`` while it is being made) and its terms."""

    vm_id: str
    vcpus: int
    memory_mib: int
    owner: str
    detached: bool
    machine: Any = None
    deleting: asyncio.Task[None] | None = None


class Host:
    """The body of a host actor (see the module documentation).

    Args:
        node_id: the Ray node it is pinned to.
        namespace: the Ray namespace of the cluster (where its book is).
    """

    def __init__(self, node_id: str, namespace: str) -> None:
        from firec.host.registry import Registry

        self.node_id = node_id
        self.namespace = namespace
        self.settings = HostSettings.of_this_node().resolved(node_id)
        self.name = self.settings.name or node_id[:8]
        assert self.settings.state_dir is not None  # resolved
        self.registry = Registry(self.settings.state_dir)
        self.held: dict[str, _Held] = {}
        self.links: dict[str, Any] = {}
        self.snapshots: set[Path] = set()
        self.firecracker: Path | None = None
        self.version = ""
        self.snapshot_format = ""
        self.reason = self._check()
        self.has_jailer = self._jailer()
        self._watch: asyncio.Task[None] | None = None
        self._book: Any = None
        self._book_news: list[tuple[Any, ...]] = []
        if not self.reason:
            self._reap_left_overs()
        book = self._the_book()
        if book is not None:  # what the book had of this host's VMs was reaped above
            book.forget_host.remote(self.name)

    # -- what it is --------------------------------------------------------

    def _check(self) -> str:
        """Why this host cannot run VMs, or ``""``."""
        from firec.host.checks import check_kvm
        from firec.snapshots._format import probe
        from firec.vm.binaries import resolve_binary

        if self.settings.needs_kvm:
            kvm = check_kvm()
            if not kvm.ok:
                return f"{kvm.detail} ({kvm.fix})" if kvm.fix else kvm.detail
        try:
            binary = resolve_binary(self.settings.firecracker, "firecracker")
            found = probe(binary)
        except FirecError as exc:
            return f"no Firecracker: {exc}"
        self.firecracker = binary
        self.version = str(found.version)
        self.snapshot_format = str(found.snapshot_format)
        return ""

    def _jailer(self) -> bool:
        from firec.vm.binaries import resolve_binary

        try:
            return resolve_binary(self.settings.jailer, "jailer").exists()
        except FirecError:
            return False

    def _reap_left_overs(self) -> None:
        """Reap VMs an earlier host actor of this node left (their controller died)."""
        from firec.host.registry import reap_abandoned

        for entry in reap_abandoned(self.registry):
            if entry.error:
                log.warning("host %s: could not reap %s: %s", self.name, entry.vm_id, entry.error)
            else:
                log.info("host %s: reaped %s (%s)", self.name, entry.vm_id, entry.reason)

    def _report(self) -> HostInfo:
        s = self.settings
        assert s.vcpus is not None and s.memory_mib is not None and s.cpu is not None
        return HostInfo(
            name=self.name,
            node_id=self.node_id,
            usable=not self.reason,
            reason=self.reason,
            vcpus=s.vcpus,
            memory_mib=s.memory_mib,
            vcpus_free=s.vcpus - sum(h.vcpus for h in self.held.values()),
            memory_mib_free=s.memory_mib - sum(h.memory_mib for h in self.held.values()),
            vms=len(self.held),
            max_vms=s.max_vms,
            firecracker_version=self.version,
            snapshot_format=self.snapshot_format,
            cpu=s.cpu,
            jailer=self.has_jailer,
            labels=dict(s.labels),
        )

    async def info(self) -> HostInfo:
        """This host's report: what it has, what is free, what it runs."""
        return self._report()

    async def vms(self) -> list[VmInfo]:
        """Every VM of this host, with its state."""
        return list(await asyncio.gather(*(self._vm_info(h) for h in list(self.held.values()))))

    async def _vm_info(self, held: _Held) -> VmInfo:
        state = VmState.NOT_STARTED
        if held.machine is not None:
            with contextlib.suppress(FirecError):
                state = VmState(str((await held.machine.state()).value))
        return self._vm_info_as(held, state)

    def _vm_info_as(self, held: _Held, state: VmState) -> VmInfo:
        return VmInfo(
            vm_id=held.vm_id,
            host=self.name,
            node_id=self.node_id,
            state=state,
            vcpus=held.vcpus,
            memory_mib=held.memory_mib,
            owner=held.owner,
            detached=held.detached,
        )

    # -- drivers -----------------------------------------------------------

    async def register(self, owner: str, link: Any) -> None:
        """Know driver ``owner`` by its link actor, and watch it from now on."""
        self.links[owner] = link
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_links())

    async def _watch_links(self) -> None:
        while self.links:
            await asyncio.sleep(LINK_CHECK)
            await self.reap_gone_owners()

    async def reap_gone_owners(self) -> list[VmInfo]:
        """Delete the VMs of every driver that is gone (detached VMs stay); return them."""
        from ray.exceptions import RayActorError

        reaped: list[VmInfo] = []
        for owner, link in list(self.links.items()):
            try:
                await asyncio.wait_for(io.get(link.ping.remote()), LINK_TIMEOUT)
            except RayActorError:
                reaped += await self.release_owner(owner)
            except TimeoutError:
                log.warning("host %s: driver %s silent for %gs", self.name, owner, LINK_TIMEOUT)
        return reaped

    async def release_owner(self, owner: str) -> list[VmInfo]:
        """Delete the VMs driver ``owner`` made that are not detached, and forget it."""
        self.links.pop(owner, None)
        mine = [h for h in self.held.values() if h.owner == owner and not h.detached]
        infos = [await self._vm_info(h) for h in mine]
        for held in mine:
            with contextlib.suppress(FirecError):
                await self.delete(held.vm_id)
        return infos

    # -- making VMs --------------------------------------------------------

    def _admit(self, vm_id: str, vcpus: int, memory_mib: int, owner: str, detached: bool) -> _Held:
        """Reserve room for a VM, or refuse it (this host's free room is the truth)."""
        from firec.cluster.placement import Request, why_not

        if vm_id in self.held:
            raise ClusterError(f"host {self.name} already has a microVM {vm_id}")
        why = why_not(Request(vcpus=vcpus, memory_mib=memory_mib), self._report())
        if why is not None:
            raise NoFitError(f"{vcpus} vCPUs and {memory_mib} MiB", {self.name: why})
        held = _Held(vm_id, vcpus, memory_mib, owner, detached)
        self.held[vm_id] = held
        return held

    def _adopt(self, config: Any) -> Any:
        """``config`` with this host's directories and binaries where it names none."""
        from firec.host.registry import Registry

        s = self.settings
        changes: dict[str, Any] = {}
        if config.workdir is None:
            changes["workdir"] = s.runtime_dir
        if config.state_dir is None:
            changes["state_dir"] = Registry(s.state_dir).network_dir
        if config.jailer is None and config.firecracker_binary is None:
            changes["firecracker_binary"] = self.firecracker
        if config.jailer is not None:
            jail = config.jailer
            if jail.exec_file is None:
                jail = replace(jail, exec_file=self.firecracker)
            if jail.jailer_binary is None and s.jailer is not None:
                jail = replace(jail, jailer_binary=s.jailer)
            changes["jailer"] = jail
        return config.replace(**changes) if changes else config

    def _announce(self, held: _Held) -> None:
        """Tell the book of a new VM (soon, with other news: see :meth:`_tell_book`)."""
        self._tell_book(("put", self.name, self.node_id, held.vm_id, held.vcpus, held.memory_mib))

    def _tell_book(self, change: tuple[Any, ...]) -> None:
        """Queue ``change`` for the book; what is queued goes in one call, after a moment.

        Not on the way of the answer: a call costs the loop some CPU, and the
        book need not know at once (it matters only once a host has died).
        """
        self._book_news.append(change)
        if len(self._book_news) == 1:
            asyncio.get_running_loop().call_later(BOOK_DELAY, self._send_book_news)

    def _send_book_news(self) -> None:
        news, self._book_news = self._book_news, []
        book = self._the_book()
        if book is not None and news:
            book.apply.remote(news)

    def _the_book(self) -> Any:
        if self._book is None:
            import ray

            with contextlib.suppress(ValueError):
                self._book = ray.get_actor(BOOK_NAME, namespace=self.namespace)
        return self._book

    async def create(self, config: dict[str, Any], owner: str, detached: bool) -> VmInfo:
        """Create a VM of ``config`` (:meth:`firec.Config.to_dict`) for driver ``owner``."""
        from firec.vm._async.machine import AsyncMachine
        from firec.vm.config import BootMethod, Config

        self._usable()
        cfg = self._adopt(Config.from_dict(config))
        machine_config = cfg.machine
        held = self._admit(
            cfg.vm_id, machine_config.vcpu_count, machine_config.mem_size_mib, owner, detached
        )
        try:
            held.machine = await AsyncMachine.create(cfg, registry=self.registry)
        except BaseException:
            del self.held[cfg.vm_id]
            raise
        self._announce(held)
        booted = cfg.boot_method is BootMethod.CONFIG_FILE  # it boots as it is created
        return self._vm_info_as(held, VmState.RUNNING if booted else VmState.NOT_STARTED)

    async def run(self, config: dict[str, Any], owner: str, detached: bool) -> VmInfo:
        """Create a VM of ``config`` and boot it: :meth:`create` and ``start`` in one call.

        A VM that fails to boot is deleted before its error is raised, so that
        nothing of it is left for the driver to clean up (or to lose, if the
        driver dies first).
        """
        info = await self.create(config, owner, detached)
        if info.state is VmState.RUNNING:  # booted from a config file as it was created
            return info
        try:
            await self.held[info.vm_id].machine.start()
        except BaseException:
            try:
                await self.delete(info.vm_id)
            except Exception as exc:  # the boot's error is the one the driver needs
                log.warning(
                    "host %s: deleting %s after its failed boot: %s", self.name, info.vm_id, exc
                )
            raise
        return replace(info, state=VmState.RUNNING)

    async def restore(
        self,
        snapshot: ClusterSnapshot,
        n: int,
        owner: str,
        detached: bool,
        store: SnapshotStore,
        origin: Any,
    ) -> list[VmInfo]:
        """Start ``n`` clones of ``snapshot``, bringing it here through ``store`` first."""
        from firec.snapshots.snapshot import Snapshot
        from firec.vm._async.machine import AsyncMachine

        self._usable()
        base = f"{snapshot.vm_id[:48]}-{secrets.token_hex(3)}"
        ids = [f"{base}-{i}" for i in range(n)]
        held = [self._admit(i, snapshot.vcpus, snapshot.memory_mib, owner, detached) for i in ids]
        try:
            directory = await self._bring(snapshot, store, origin)
            local = Snapshot.open(directory)
            config = self._adopt(local.config(base))
            machines = await AsyncMachine.clone(local, n, config)
        except BaseException:
            for i in ids:
                self.held.pop(i, None)
            raise
        for h, machine in zip(held, machines, strict=True):  # clone named them <base>-<i>
            h.machine = machine
            self._announce(h)
        return [self._vm_info_as(h, VmState.RUNNING) for h in held]  # clones are resumed

    async def _bring(self, snapshot: ClusterSnapshot, store: SnapshotStore, origin: Any) -> Path:
        if snapshot.host == self.name:
            return snapshot.directory
        if store.shared:
            return await store.bring(snapshot, self._snapshot_dir(), _nothing, _no_read)

        async def describe() -> list[FileDescription]:
            result: list[FileDescription] = await io.get(
                origin.describe_snapshot.remote(str(snapshot.directory))
            )
            return result

        async def read(name: str, offset: int, length: int) -> bytes:
            data: bytes = await io.get(
                origin.read_chunk.remote(str(snapshot.directory), name, offset, length)
            )
            return data

        return await store.bring(snapshot, self._snapshot_dir(), describe, read)

    def _snapshot_dir(self) -> Path:
        assert self.settings.snapshot_dir is not None
        return self.settings.snapshot_dir

    def _usable(self) -> None:
        if self.reason:
            raise ClusterError(f"host {self.name} cannot run microVMs: {self.reason}")

    # -- a VM's life -------------------------------------------------------

    def _machine(self, vm_id: str) -> Any:
        held = self.held.get(vm_id)
        if held is None or held.machine is None:
            raise ClusterError(f"host {self.name} has no microVM {vm_id}")
        return held.machine

    async def call(self, vm_id: str, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run one of :data:`OPERATIONS` on VM ``vm_id`` with ``args`` and ``kwargs``; its result.

        The operation's arguments are the call's own, not a tuple and a dict:
        Ray sends each argument of an actor call on its own, and an operation
        without arguments (``state``, ``start``) then sends just two. ``state``
        answers the :class:`VmState`'s value, a plain string, which Ray sends
        without pickling it (the driver makes it a :class:`VmState` again).
        """
        if op not in OPERATIONS:
            raise ClusterError(f"{op!r} cannot be called on a remote microVM")
        target = self._machine(vm_id)
        for part in op.split("."):
            target = getattr(target, part)
        result = target(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        if op == "state":
            return VmState(str(result.value)).value
        return result

    async def detach(self, vm_id: str) -> None:
        """Let VM ``vm_id`` outlive the driver that made it."""
        self._machine(vm_id)
        self.held[vm_id].detached = True

    async def delete(self, vm_id: str) -> None:
        """Stop VM ``vm_id`` and remove everything it had.

        A delete already under way (a driver's, and the reaping of its gone
        owner's VMs, say) is waited for, not started again; a VM already gone
        (deleted by another call) is left so, as :meth:`firec.AsyncMachine.delete`
        is safe to call twice.
        """
        held = self.held.get(vm_id)
        if held is None:
            return
        machine = self._machine(vm_id)  # refuses one still being made
        if held.deleting is None:
            held.deleting = asyncio.get_running_loop().create_task(self._delete(vm_id, machine))
        await asyncio.shield(held.deleting)

    async def _delete(self, vm_id: str, machine: Any) -> None:
        try:
            await machine.delete()
        finally:
            self.held.pop(vm_id, None)
            self._tell_book(("drop", self.name, vm_id))

    async def stop(self) -> list[str]:
        """Delete every VM of this host (before the actor is ended); their ids."""
        ids = [vm_id for vm_id, h in self.held.items() if h.machine is not None]
        results = await asyncio.gather(*(self.delete(i) for i in ids), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        if self._watch is not None:
            self._watch.cancel()
        return ids

    # -- snapshots ---------------------------------------------------------

    async def snapshot(
        self, vm_id: str, name: str, store: SnapshotStore, resume: bool
    ) -> ClusterSnapshot:
        """Take a full snapshot of VM ``vm_id`` into ``store`` as ``name``."""
        machine = self._machine(vm_id)
        directory = store.directory_for(self._snapshot_dir(), name)
        directory.parent.mkdir(parents=True, exist_ok=True)
        taken = await machine.snapshot(directory, resume=resume)
        self.snapshots.add(directory.resolve())
        held = self.held[vm_id]
        template = taken.vm_config.get("machine-config", {}).get("cpu_template")
        assert self.settings.cpu is not None
        return ClusterSnapshot(
            name=name,
            host=self.name,
            directory=directory,
            shared=store.shared,
            vm_id=vm_id,
            firecracker_version=str(taken.firecracker_version),
            snapshot_format=str(taken.snapshot_format),
            cpu=self.settings.cpu,
            cpu_template=template if template not in (None, "None") else None,
            vcpus=held.vcpus,
            memory_mib=held.memory_mib,
        )

    def _served(self, directory: str) -> Path:
        """A snapshot directory this host took, or refuse (no other file is served)."""
        path = Path(directory).resolve()
        if path not in self.snapshots:
            raise ClusterError(f"host {self.name} holds no snapshot at {directory}")
        return path

    async def describe_snapshot(self, directory: str) -> list[FileDescription]:
        """Each file of a snapshot this host took: size, data extents, SHA-256."""
        path = self._served(directory)
        return await asyncio.to_thread(
            lambda: [describe_file(p) for p in sorted(path.iterdir()) if p.is_file()]
        )

    async def read_chunk(self, directory: str, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of file ``name`` of a snapshot this host took."""
        path = self._served(directory) / Path(name).name

        def read() -> bytes:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(length)

        return await asyncio.to_thread(read)


async def _nothing() -> list[FileDescription]:
    return []


async def _no_read(name: str, offset: int, length: int) -> bytes:
    raise ClusterError("the snapshot is on this host: nothing is read from another")


#: The name of the cluster's book actor in its namespace.
BOOK_NAME = "firec-book"


class Book:
    """The cluster's book of VMs: which host each runs on (so the VMs of a dead host are known).

    Hosts write to it without waiting; drivers read it in :meth:`Cluster.ls`.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[str, int, int]] = {}

    def apply(self, changes: list[tuple[Any, ...]]) -> None:
        """Apply hosts' news in order.

        Each is ``("put", host, node, vm, vcpus, MiB)`` or ``("drop", host, vm)``.
        """
        for kind, *args in changes:
            if kind == "put":
                self.put(*args)
            elif kind == "drop":
                self.drop(*args)

    def put(self, host: str, node_id: str, vm_id: str, vcpus: int, memory_mib: int) -> None:
        """A VM was made on ``host``."""
        self.entries[(host, vm_id)] = (node_id, vcpus, memory_mib)

    def drop(self, host: str, vm_id: str) -> None:
        """A VM of ``host`` was removed."""
        self.entries.pop((host, vm_id), None)

    def forget_host(self, host: str) -> int:
        """Forget every VM of ``host`` (its leftovers were reaped); how many."""
        gone = [key for key in self.entries if key[0] == host]
        for key in gone:
            del self.entries[key]
        return len(gone)

    def all(self) -> list[tuple[str, str, str, int, int]]:
        """Every VM: (host, node id, vm id, vCPUs, MiB)."""
        return [(h, n, v, c, m) for (h, v), (n, c, m) in self.entries.items()]


class Link:
    """A driver's link: Ray ends it when its driver exits, which tells hosts the driver is gone."""

    def ping(self) -> bool:
        """Answer: the driver is there."""
        return True
