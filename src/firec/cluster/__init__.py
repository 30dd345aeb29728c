"""microVMs on many hosts, through Ray: ``pip install 'firec[ray]'``.

Ray is the scheduler and the wire; firec adds no RPC layer of its own.

* :func:`connect` / :meth:`AsyncCluster.connect`: join a Ray cluster (or
  start a local one) and the firec host actor of each KVM node
  (:mod:`._host`: it owns that node's microVMs through
  :class:`firec.AsyncMachine`, pinned to its node, and reports capacity);
* :class:`Cluster` / :class:`AsyncCluster` (``_sync/cluster.py`` is
  generated from ``_async/cluster.py``): ``hosts()``, ``run(config)`` (a
  VM created and booted in one call), ``create(config)``, ``restore(snapshot, n)``,
  ``ls()``, ``gc()``;
* :class:`RemoteMachine` / :class:`AsyncRemoteMachine`: a VM on a host:
  start, pause, resume, state, snapshot, wait, console lines, metrics,
  exec and files through the guest agent, delete;
* :mod:`.hosts`: what a host is told (:class:`HostSettings`, read from
  ``$FIREC_HOST_CONFIG`` or ``/etc/firec/host.toml`` on its node) and what it
  reports (:class:`HostInfo`, :class:`VmInfo`, :class:`VmState`);
* :mod:`.placement`: bin-packing by vCPUs and memory, labels, limits, and the
  rules that say where a snapshot can be restored;
* :mod:`.snapshots`: :class:`ClusterSnapshot` and the stores that bring a
  snapshot to another host (:class:`SharedDirectory`, :class:`CopyFromHost`).

Example::

    >>> import firec
    >>> from firec import cluster
    >>> with cluster.connect() as c:                    # doctest: +SKIP
    ...     vm = c.run(firec.Config.builder("vm1", "/srv/vmlinux").build())
    ...     [(v.vm_id, v.host, v.state) for v in c.ls()]
    [('vm1', 'kvm-07', 'Running')]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.cluster._async.cluster import AsyncCluster
    from firec.cluster._async.remote import AsyncRemoteFiles, AsyncRemoteMachine
    from firec.cluster._sync.cluster import Cluster
    from firec.cluster._sync.remote import RemoteFiles, RemoteMachine
    from firec.cluster.hosts import CpuInfo, HostInfo, HostSettings, VmInfo, VmState
    from firec.cluster.placement import Request
    from firec.cluster.snapshots import (
        ClusterSnapshot,
        CopyFromHost,
        SharedDirectory,
        SnapshotStore,
    )

__all__ = [
    "AsyncCluster",
    "AsyncRemoteFiles",
    "AsyncRemoteMachine",
    "Cluster",
    "ClusterSnapshot",
    "CopyFromHost",
    "CpuInfo",
    "HostInfo",
    "HostSettings",
    "RemoteFiles",
    "RemoteMachine",
    "Request",
    "SharedDirectory",
    "SnapshotStore",
    "VmInfo",
    "VmState",
    "connect",
]

_HOMES = {
    "AsyncCluster": "firec.cluster._async.cluster",
    "AsyncRemoteFiles": "firec.cluster._async.remote",
    "AsyncRemoteMachine": "firec.cluster._async.remote",
    "Cluster": "firec.cluster._sync.cluster",
    "RemoteFiles": "firec.cluster._sync.remote",
    "RemoteMachine": "firec.cluster._sync.remote",
    "CpuInfo": "firec.cluster.hosts",
    "HostInfo": "firec.cluster.hosts",
    "HostSettings": "firec.cluster.hosts",
    "VmInfo": "firec.cluster.hosts",
    "VmState": "firec.cluster.hosts",
    "Request": "firec.cluster.placement",
    "ClusterSnapshot": "firec.cluster.snapshots",
    "CopyFromHost": "firec.cluster.snapshots",
    "SharedDirectory": "firec.cluster.snapshots",
    "SnapshotStore": "firec.cluster.snapshots",
}

__getattr__, __dir__ = lazy_door(__name__, _HOMES, ("hosts", "placement", "snapshots"))


def connect(address: str | None = None, **options: Any) -> Cluster:
    """Join the Ray cluster at ``address`` (``None``: ``$RAY_ADDRESS``, else a local one).

    Options as :meth:`Cluster.connect` (``store``, ``namespace``). Raises
    :class:`ImportError` naming ``firec[ray]`` when Ray is not installed.
    """
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "firec.cluster needs Ray: pip install 'firec[ray]'", name=exc.name
        ) from exc
    from firec.cluster._sync.cluster import Cluster

    return Cluster.connect(address, **options)
