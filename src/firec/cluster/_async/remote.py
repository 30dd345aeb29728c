"""A microVM on a host of the cluster, driven from here: :class:`AsyncRemoteMachine`.

This file is the one source of both flavours: ``scripts/unasync.py`` writes
``_sync/remote.py`` (:class:`firec.cluster.RemoteMachine`) from it.

Each method is one call to the VM's host actor, which runs it on its
:class:`firec.AsyncMachine`. A host that died (its actor or its node) makes
the VM lost: :meth:`AsyncRemoteMachine.state` then says ``Lost`` and every
other method raises :class:`~firec.errors.HostLostError`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from firec.cluster._async import io
from firec.cluster._errors import actor_died
from firec.cluster.hosts import VmInfo, VmState
from firec.errors import HostLostError

if TYPE_CHECKING:
    from firec.agent.results import ExecResult, FileInfo
    from firec.cluster.snapshots import ClusterSnapshot, SnapshotStore
    from firec.vm.metrics import MetricsSnapshot
    from firec.vm.process import ExitStatus

__all__ = ["AsyncRemoteFiles", "AsyncRemoteMachine"]


class Owner(Protocol):
    """What a remote VM tells the cluster that made it (:class:`~firec.cluster.AsyncCluster`)."""

    @property
    def store(self) -> SnapshotStore:
        """Where its snapshots go."""
        ...

    def _host_died(self, name: str, why: str) -> None: ...

    def _released(self, machine: AsyncRemoteMachine) -> None: ...


class AsyncRemoteMachine:
    """A microVM on a host of the cluster (made by :meth:`firec.cluster.AsyncCluster.run` or
    :meth:`~firec.cluster.AsyncCluster.create`).

    As an async context manager, it is deleted when the block ends. Example::

        async with await cluster.run(config) as vm:
            print(vm.host, await vm.state())

    Attributes:
        vm_id: its id (unique on its host).
        host: the name of the host it runs on.
        node_id: that host's Ray node.
    """

    def __init__(self, cluster: Owner, info: VmInfo, handle: Any) -> None:
        self.vm_id = info.vm_id
        self.host = info.host
        self.node_id = info.node_id
        self.vcpus = info.vcpus
        self.memory_mib = info.memory_mib
        self._cluster = cluster
        self._handle = handle
        self._lost = ""
        self._deleted = False

    def __repr__(self) -> str:
        return f"<RemoteMachine {self.vm_id} on {self.host}>"

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if self._lost:
            raise HostLostError(self.host, self.vm_id, self._lost)
        try:
            return await io.get(self._handle.call.remote(self.vm_id, op, *args, **kwargs))
        except Exception as exc:
            if actor_died(exc):
                self._lose(exc)
                raise HostLostError(self.host, self.vm_id, self._lost) from None
            raise

    def _lose(self, exc: BaseException) -> None:
        self._lost = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        self._cluster._host_died(self.host, self._lost)

    async def start(self) -> None:
        """Boot the VM (InstanceStart), as :meth:`firec.AsyncMachine.start`."""
        await self._call("start")

    async def pause(self) -> None:
        """Pause its vCPUs."""
        await self._call("pause")

    async def resume(self) -> None:
        """Resume its vCPUs."""
        await self._call("resume")

    async def state(self) -> VmState:
        """Its state: Firecracker's, ``Exited``, or ``Lost`` once its host died (for good)."""
        try:
            state = VmState(await self._call("state"))  # its host answers the value
        except HostLostError:
            return VmState.LOST
        return state

    async def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait until its VMM exits; how it ended."""
        status: ExitStatus = await self._call("wait", timeout)
        return status

    async def shutdown(self, timeout: float = 10.0) -> ExitStatus:
        """Ask the guest to stop (Ctrl+Alt+Del), kill the VMM after ``timeout``."""
        status: ExitStatus = await self._call("shutdown", timeout=timeout)
        return status

    async def console_lines(self, n: int = 20) -> list[str]:
        """The last ``n`` lines of its serial console."""
        lines: list[str] = await self._call("console_lines", n)
        return lines

    async def metrics(self) -> MetricsSnapshot:
        """Its metrics, written now (needs a metrics path or fifo in its config)."""
        metrics: MetricsSnapshot = await self._call("flush_metrics")
        return metrics

    async def snapshot(self, name: str | None = None, *, resume: bool = True) -> ClusterSnapshot:
        """Take a full snapshot into the cluster's store, as ``name`` (default: a new one).

        The VM is paused for it, and resumed after unless ``resume=False``.
        Restore it anywhere it can be with :meth:`firec.cluster.AsyncCluster.restore`.
        """
        if self._lost:
            raise HostLostError(self.host, self.vm_id, self._lost)
        name = name or f"{self.vm_id}-{secrets.token_hex(4)}"
        try:
            ref = self._handle.snapshot.remote(self.vm_id, name, self._cluster.store, resume)
            taken: ClusterSnapshot = await io.get(ref)
        except Exception as exc:
            if actor_died(exc):
                self._lose(exc)
                raise HostLostError(self.host, self.vm_id, self._lost) from None
            raise
        return taken

    async def exec(self, argv: Sequence[str] | str, **options: Any) -> ExecResult:
        """Run a command in the guest, through its agent (as :meth:`firec.AsyncMachine.exec`)."""
        result: ExecResult = await self._call("exec", argv, **options)
        return result

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the guest agent answers."""
        await self._call("wait_ready", timeout)

    @property
    def files(self) -> AsyncRemoteFiles:
        """The guest's files, through its agent (as :attr:`firec.AsyncMachine.files`)."""
        return AsyncRemoteFiles(self)

    async def detach(self) -> None:
        """Let the VM outlive this driver (it is then removed only by :meth:`delete`)."""
        if self._lost:
            raise HostLostError(self.host, self.vm_id, self._lost)
        await io.get(self._handle.detach.remote(self.vm_id))

    async def delete(self) -> None:
        """Stop the VM and remove everything it had on its host. A lost VM is just forgotten."""
        if self._deleted or self._lost:
            self._deleted = True
            return
        try:
            await io.get(self._handle.delete.remote(self.vm_id))
        except Exception as exc:
            if not actor_died(exc):
                raise
            self._lose(exc)
        self._deleted = True
        self._cluster._released(self)

    async def __aenter__(self) -> AsyncRemoteMachine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.delete()


class AsyncRemoteFiles:
    """The files of a remote VM's guest, through its agent (``vm.files``)."""

    def __init__(self, machine: AsyncRemoteMachine) -> None:
        self._machine = machine

    async def read(self, path: str | os.PathLike[str]) -> bytes:
        """The bytes of guest file ``path``."""
        data: bytes = await self._machine._call("files.read", os.fspath(path))
        return data

    async def write(
        self, path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644
    ) -> int:
        """Write ``data`` to guest file ``path``; how many bytes."""
        written: int = await self._machine._call("files.write", os.fspath(path), data, mode=mode)
        return written

    async def exists(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` exists in the guest."""
        found: bool = await self._machine._call("files.exists", os.fspath(path))
        return found

    async def stat(self, path: str | os.PathLike[str]) -> FileInfo:
        """What the guest says of ``path``."""
        info: FileInfo = await self._machine._call("files.stat", os.fspath(path))
        return info

    async def list(self, path: str | os.PathLike[str]) -> list[FileInfo]:
        """The entries of guest directory ``path``."""
        entries: list[FileInfo] = await self._machine._call("files.list", os.fspath(path))
        return entries

    async def remove(self, path: str | os.PathLike[str], *, recursive: bool = False) -> None:
        """Remove ``path`` in the guest."""
        await self._machine._call("files.remove", os.fspath(path), recursive=recursive)
