"""A microVM's snapshots: take one, restore a new VM from one, or start clones of it.

The layer of :class:`firec.AsyncMachine` (see :mod:`firec.vm._async.machine`)
on top of its lifecycle (:mod:`firec.vm._async.lifecycle`): a restore is a
create whose VMM loads a :class:`~firec.snapshots.Snapshot` instead of being
configured, with what it needs made first by :mod:`firec.vm._restore`.
"""

# This file is the one source of both flavours: snapshots.py (under the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from firec.api import models
from firec.api._async.client import AsyncClient
from firec.errors import APIError, ConnectError, SnapshotError
from firec.snapshots.snapshot import PerClone, Snapshot
from firec.vm._async import io
from firec.vm._async.guest import MachineGuest
from firec.vm._async.vmm import QUICK_RETRIES, READY_TIMEOUT
from firec.vm._launch import Launch, plan
from firec.vm._registry.claim import Registration, Registry
from firec.vm._restore import (
    RestorePlan,
    attach_restore_network,
    clone_plans,
    first_failure,
    plan_restore,
    prepare_restore,
)
from firec.vm._snapshot_target import SnapshotTarget
from firec.vm.config import Config
from firec.vm.fork import Fork
from firec.vm.guest_agent import runs_agent
from firec.vm.state import MachineState

if TYPE_CHECKING:
    from firec.snapshots.uffd import UffdHandler

__all__ = ["MachineSnapshots"]


class MachineSnapshots(MachineGuest):
    """A microVM's snapshots, and new VMs from them: a layer of :class:`firec.AsyncMachine`."""

    @classmethod
    async def restore(
        cls,
        snapshot: Snapshot,
        config: Config | None = None,
        *,
        resume: bool = True,
        backend: models.MemoryBackendType | str = models.MemoryBackendType.FILE,
        uffd_handler: UffdHandler | str | os.PathLike[str] | None = None,
        network_overrides: Mapping[str, str] | None = None,
        vsock_override: str | os.PathLike[str] | None = None,
        track_dirty_pages: bool | None = None,
        ready_timeout: float = READY_TIMEOUT,
        registry: Registry | Registration | None = None,
    ) -> Self:
        """Spawn a new VMM (plain or jailed) and load ``snapshot`` into it.

        ``config`` gives the new VM's id and how to run it (binary, jailer,
        workdir, logs, console); its devices come from the snapshot. Without
        one, :meth:`Snapshot.config` derives one with a new id. An interface
        of ``config`` with one of the snapshot's ids brings its tap and its
        network plan (set up as by :meth:`create`, torn down with the VM); a
        tap other than the snapshot's becomes a network override. A drive of
        ``config`` with one of the snapshot's ids brings its file (jailed
        restores: linked in at the snapshot's path, under the rules of
        :meth:`firec.vm.layout.Layout.bring_in`). Example::

            snap = machine.snapshot("/srv/snaps/base")
            copy = await AsyncMachine.restore(snap, network_overrides={"eth0": "tap7"})

        Args:
            snapshot: what to load (its files are only read, never changed; in a
                jail they are hard-linked in when the jail's user may read them as
                they are, copied for it otherwise: :meth:`firec.vm.layout.Layout.bring_in`).
            resume: resume the VM in the same request (otherwise it stays Paused).
            backend: ``"File"`` (Firecracker maps the memory file) or ``"Uffd"``
                (a page-fault handler serves it: firec's own
                :class:`~firec.snapshots.uffd.UffdHandler` unless ``uffd_handler`` names
                one, a handler object or its socket path as Firecracker sees it).
            network_overrides: ``iface_id`` -> tap to use instead (Firecracker 1.12+).
            vsock_override: a new vsock socket path (Firecracker 1.16+).
            track_dirty_pages: track dirty pages after the load (for diff snapshots).
            registry: where the new VM's id is claimed with a host record (as
                for :meth:`create`).

        Raises:
            SnapshotError: before spawning: the snapshot is from a Firecracker
                this one cannot load (both versions named), or its memory file
                is missing or truncated.
            ConfigError, UnsupportedError: before spawning: overrides naming
                unknown interfaces, options this Firecracker lacks.
            InUseError: before spawning: the new VM's id is taken.
            APIError: Firecracker refused the load (it then exits); nothing
                is left behind.
        """
        checked = plan_restore(  # quick: stats, and the binary's version once (cached)
            snapshot,
            config,
            resume=resume,
            backend=backend,
            uffd_handler=uffd_handler,
            network_overrides=network_overrides,
            vsock_override=vsock_override,
            track_dirty_pages=track_dirty_pages,
        )
        launch = plan(checked.config)  # for the record and the VMM alike
        origin = f"snapshot:{snapshot.directory}"
        registration = cls._claim(checked.config, registry, origin, launch=launch)
        networked = any(i.network is not None for i in checked.config.network_interfaces)
        attach = attach_restore_network if networked else None
        claimed = checked
        machine, checked = await cls._own(
            registration,
            checked,
            attach,
            # the claim's launch, unless the network set-up changed the config (taps, netns)
            lambda planned: cls._restoring(planned, launch if planned is claimed else None),
        )
        try:
            # links, or copies of what a jail's user could not read
            setup = await io.run_blocking(prepare_restore, machine._launch, checked)
            machine._uffd = setup.handler
            await machine._spawn(ready_timeout, ask=False)
            await machine._load(setup.params, time.monotonic() + ready_timeout)
            watch = machine._exit_watch()
            if watch is not None:
                watch.observe()
        except BaseException:
            await machine.delete()
            raise
        machine._snapshot_base = snapshot
        return machine

    @classmethod
    def _restoring(cls, checked: RestorePlan, launch: Launch | None = None) -> Self:
        """A machine for ``checked``'s config, its client told the version that will load it."""
        launch = launch or plan(checked.config)
        client = AsyncClient(
            launch.socket_path,
            version=checked.version,
            max_payload_size=checked.config.max_payload_size,
        )
        return cls(checked.config, launch=launch, client=client)

    @classmethod
    async def clone(
        cls,
        snapshot: Snapshot,
        n: int,
        config: Config | None = None,
        *,
        configure: Callable[[int, Config], Config] | None = None,
        network_overrides: PerClone | None = None,
        vsock_override: str | Callable[[int], str] | None = None,
        **restore: Any,
    ) -> list[Self]:
        """Start ``n`` independent VMs from ``snapshot``, concurrently.

        Each clone gets its own id (``<config's vm_id>-<i>``), socket, jail and
        VM directory; the memory file is shared, never copied. ``configure(i,
        config)`` may change each clone's config (another disk, log...);
        ``network_overrides`` maps interfaces to taps, e.g. ``{"eth0":
        "tap-clone{i}"}``; ``vsock_override`` is a socket path (with ``{i}``).
        Other keyword arguments go to :meth:`restore`. A clone of a guest that
        runs firec's agent is given its own identity as it starts
        (:meth:`renew_identity`: the clock, a fresh random seed, its id as
        hostname, MACs derived from its id; one restored paused, with
        ``resume=False``, gets it from :meth:`renew_identity` once resumed: its
        config already names those MACs). If one clone fails, the
        ones already started are stopped and deleted, and the first error is
        raised. Example::

            snap = machine.snapshot("/srv/snaps/base")
            clones = await AsyncMachine.clone(snap, 3)
        """
        plans = clone_plans(snapshot, n, config, configure, network_overrides, vsock_override)
        results = await io.gather(
            *(functools.partial(cls.restore, snapshot, c, **kw, **restore) for c, kw in plans)
        )
        started = [r for r in results if isinstance(r, cls)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures and restore.get("resume", True) and runs_agent(snapshot.boot_args):
            renewed = await io.gather(*(machine.renew_identity for machine in started))
            failures = [r for r in renewed if isinstance(r, BaseException)]
        if failures:
            undone = await io.gather(*(machine.delete for machine in started))
            failures += [r for r in undone if isinstance(r, BaseException)]
            raise first_failure(failures, n)
        return started

    async def fork(
        self,
        n: int = 1,
        *,
        config: Config | None = None,
        configure: Callable[[int, Config], Config] | None = None,
        network_overrides: PerClone | None = None,
        vsock_override: str | Callable[[int], str] | None = None,
        **restore: Any,
    ) -> Fork[Self]:
        """Branch this running microVM: ``n`` children restored from its state now.

        The VM is paused, snapshotted (into its own directory), resumed, and
        ``n`` children are restored from that snapshot as :meth:`clone`
        restores them: each a VM of its own (id
        ``<vm_id>-fork<k>-<i>``, socket, directory, jail), sharing the memory
        file without copying it. A child of a VM with a vsock device that is
        not jailed needs a socket of its own: ``vsock_override`` (Firecracker
        1.16+) is then given one in this VM's directory unless the caller
        names it; a child of a VM with network interfaces needs taps of its
        own (``network_overrides`` with ``{i}``, or ``configure``).

        The first fork takes a full snapshot. A VM that tracks dirty pages
        (``track_dirty_pages`` in its machine config) is paused for later
        forks only while Firecracker writes the pages it changed since (a diff
        snapshot); the full memory file the children need is merged after it
        runs on. Example::

            fork = await machine.fork(2)
            print(f"paused {fork.paused_for * 1000:.1f} ms")
            for child in fork.children:
                await child.delete()

        If one child fails, the others are deleted and :meth:`clone`'s error
        is raised; this VM runs on either way.

        Raises:
            MachineError: this VM is not running.
        """
        started = time.perf_counter()
        state = await self.state()
        if state is not MachineState.RUNNING:
            raise self._failure(f"a fork needs a running VM, and it is {state}", None)
        self._forks += 1
        name = f"fork{self._forks}"
        forks = self._launch.vm_dir / "forks"
        # after a first snapshot, a VM that tracks dirty pages writes only those: a
        # short pause; the children's full memory file is merged after it resumes
        diff = self._snapshot_base is not None and bool(self.config.machine.track_dirty_pages)
        taken = await self.snapshot(forks / name, diff=diff, resume=True)
        paused_for = time.perf_counter() - started
        if diff:
            taken = await io.run_blocking(taken.flatten, forks / f"{name}-full")
            self._snapshot_base = taken  # the next diff applies to this merged state
        if config is None:
            config = Config.from_snapshot(taken, f"{self.vm_id}-{name}").replace(
                firecracker_binary=self.config.firecracker_binary,
                jailer=self.config.jailer,
                workdir=self.config.workdir,
                host_record=self.config.host_record,
            )
        plain = self.config.jailer is None
        if vsock_override is None and self._launch.vsock_path is not None and plain:
            vsock_override = str(self._launch.vm_dir / "forks" / f"{name}-{{i}}.vsock")
        children = await self.clone(
            taken,
            n,
            config,
            configure=configure,
            network_overrides=network_overrides,
            vsock_override=vsock_override,
            **restore,
        )
        return Fork(children, taken, paused_for, time.perf_counter() - started, diff=diff)

    async def _load(self, params: models.SnapshotLoadParams, deadline: float) -> None:
        """``PUT /snapshot/load`` as soon as the socket accepts (it may refuse for a moment)."""
        started = time.monotonic()
        refusals = 0
        while True:
            try:
                await self.client.load_snapshot(params)
                return
            except ConnectError as exc:  # nothing was sent: safe to try again
                status = self.exit_status
                if status is not None:
                    what = "Firecracker exited before its API was ready"
                    raise self._failure(what, status) from exc
                if time.monotonic() > deadline:
                    raise
                refusals += 1
                if refusals <= QUICK_RETRIES:  # created, listening a moment later
                    await io.yield_cpu()
                else:
                    await io.pause(time.monotonic() - started)
            except APIError as exc:
                if "Unrecognized ioctl flags" in exc.fault_message:
                    raise SnapshotError(
                        f"Firecracker {await self.client.firecracker_version()} cannot restore "
                        "with the Uffd backend on this kernel: its userfaultfd library refuses "
                        "the kernel's newer UFFDIO ioctls (Firecracker said: "
                        f"{exc.fault_message}). Use the File backend, or a newer Firecracker "
                        "(1.14 works)"
                    ) from exc
                raise

    # -- snapshots -------------------------------------------------------------------

    async def snapshot(
        self, directory: str | os.PathLike[str], *, diff: bool = False, resume: bool = False
    ) -> Snapshot:
        """Take a snapshot into ``directory`` (new, or empty) and return it.

        The VM is paused first if it runs; afterwards it stays paused unless
        ``resume``. A diff snapshot (``diff=True``) holds the pages written
        since this VM's previous snapshot (or the snapshot it was restored
        from), which becomes its parent. In a jail Firecracker writes inside
        the jail and the files are then moved out to ``directory``. Example::

            snap = machine.snapshot("/srv/snaps/base", resume=True)
            later = machine.snapshot("/srv/snaps/step1", diff=True)
            later.flatten("/srv/snaps/step1-full")

        Raises:
            SnapshotError: ``directory`` already holds a snapshot, or a diff
                has no base to apply to.
            APIError: Firecracker refused (e.g. a diff on 1.0 without dirty
                page tracking). The VM is then resumed if it was running.
        """
        parent = self._snapshot_base if diff else None
        if diff and parent is None:
            raise SnapshotError(
                f"microVM {self.vm_id}: a diff snapshot needs a base: take a full "
                "snapshot first (or restore the VM from one)"
            )
        target = await io.run_blocking(SnapshotTarget.for_launch, self._launch, directory)
        was_running = False
        try:
            was_running = await self.state() is MachineState.RUNNING
            if was_running:
                await self.pause()
            await self.client.create_snapshot(target.params(diff))
            exported = await self.client.get_vm_config()
            version = await self.client.firecracker_version()
            taken = await io.run_blocking(
                target.finish,
                diff=diff,
                version=version,
                vm_config=exported.to_api(),
                parent=parent,
                previous=self._snapshot_base,
            )
        except BaseException:
            await io.run_blocking(target.discard)
            if was_running and self.exit_status is None:
                await self.resume()
            raise
        if resume:
            await self.resume()
        self._snapshot_base = taken
        return taken
