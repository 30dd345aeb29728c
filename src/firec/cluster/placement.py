"""Where a VM goes: bin-packing by vCPUs and memory, labels, limits, snapshot rules.

Pure functions over :class:`~firec.cluster.hosts.HostInfo` reports, with no
Ray in them: :func:`place` picks the host a VM fits tightest on (the one
left with the least memory free, then the fewest vCPUs), so that large VMs
still find room later; :func:`why_not` says, for people, why a host was not
chosen. A snapshot is placed only where it can be restored:
:func:`snapshot_refusal`.

Example::

    >>> from firec.cluster.hosts import HostInfo
    >>> a = HostInfo(name="a", node_id="1", usable=True, vcpus=8, memory_mib=4096,
    ...              vcpus_free=8, memory_mib_free=4096)
    >>> b = a.__class__(**{**a.__dict__, "name": "b", "memory_mib_free": 1024})
    >>> place(Request(vcpus=1, memory_mib=512), [a, b]).name
    'b'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firec.errors import NoFitError

if TYPE_CHECKING:
    from firec.cluster.hosts import HostInfo
    from firec.cluster.snapshots import ClusterSnapshot

__all__ = ["Request", "place", "snapshot_refusal", "why_not"]


@dataclass(frozen=True)
class Request:
    """What a VM asks of a host.

    Attributes:
        vcpus, memory_mib: its size.
        host: only this host (by name).
        labels: only hosts with all of these labels.
        snapshot: it is restored from this snapshot (only hosts that can).
    """

    vcpus: int
    memory_mib: int
    host: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    snapshot: ClusterSnapshot | None = None

    def describe(self) -> str:
        """The request, for people."""
        text = f"{self.vcpus} vCPUs and {self.memory_mib} MiB"
        if self.host:
            text += f" on host {self.host}"
        if self.labels:
            text += " with labels " + ", ".join(f"{k}={v}" for k, v in self.labels.items())
        if self.snapshot is not None:
            text += f", restoring snapshot {self.snapshot.name}"
        return text


def snapshot_refusal(snapshot: ClusterSnapshot, host: HostInfo) -> str | None:
    """Why ``snapshot`` cannot be restored on ``host``, or ``None`` if it can.

    The rules: the same CPU vendor as where it was taken; its CPU template
    offered by the host's CPU; a Firecracker that reads its snapshot format.
    """
    from firec.api.versions import Version
    from firec.snapshots._format import incompatibility

    if host.cpu.vendor != snapshot.cpu.vendor:
        return f"CPU vendor {host.cpu.vendor}, the snapshot was taken on {snapshot.cpu.vendor}"
    if snapshot.cpu_template and snapshot.cpu_template not in host.cpu.templates:
        offered = ", ".join(host.cpu.templates) or "none"
        return f"no CPU template {snapshot.cpu_template} (offers {offered})"
    if not host.firecracker_version:
        return "its Firecracker version is unknown"
    found = Version.parse(host.firecracker_version)
    written = Version.parse(host.snapshot_format) if host.snapshot_format else None
    why = incompatibility(
        Version.parse(snapshot.firecracker_version),
        Version.parse(snapshot.snapshot_format),
        found,
        written,
    )
    if why is None:
        return None
    return f"Firecracker {found} here, {snapshot.firecracker_version} took it: {why}"


def why_not(request: Request, host: HostInfo) -> str | None:
    """Why ``request`` does not fit ``host``, or ``None`` if it does."""
    if not host.usable:
        return f"not usable: {host.reason}"
    if request.host is not None and host.name != request.host:
        return "not the host asked for"
    missing = [f"{k}={v}" for k, v in request.labels.items() if host.labels.get(k) != v]
    if missing:
        return "no label " + ", ".join(missing)
    if host.max_vms is not None and host.vms >= host.max_vms:
        return f"at its limit of {host.max_vms} VMs"
    if request.snapshot is not None:
        refusal = snapshot_refusal(request.snapshot, host)
        if refusal is not None:
            return refusal
    if host.vcpus_free < request.vcpus or host.memory_mib_free < request.memory_mib:
        return f"only {host.vcpus_free} vCPUs and {host.memory_mib_free} MiB free"
    return None


def place(request: Request, hosts: Sequence[HostInfo]) -> HostInfo:
    """The host ``request`` fits tightest on.

    Raises:
        NoFitError: no host fits; the message says what was asked for, and
            for each host what it has free and why it was not chosen.
    """
    fits = [h for h in hosts if why_not(request, h) is None]
    if not fits:
        raise NoFitError(request.describe(), {h.name: f"{why_not(request, h)}" for h in hosts})
    return min(fits, key=lambda h: (h.memory_mib_free - request.memory_mib, h.vcpus_free, h.name))


def place_many(request: Request, n: int, hosts: Sequence[HostInfo]) -> list[HostInfo]:
    """Hosts for ``n`` VMs of ``request`` (one entry per VM), each placed as if the others were.

    Raises:
        NoFitError: they do not all fit (nothing is placed then).
    """
    current = {h.name: h for h in hosts}
    chosen = []
    for _ in range(n):
        try:
            host = place(request, list(current.values()))
        except NoFitError:
            break
        current[host.name] = host.taking(request.vcpus, request.memory_mib)
        chosen.append(host)
    if len(chosen) == n:
        return chosen
    room = {h.name: sum(c.name == h.name for c in chosen) for h in hosts}
    reasons = {
        h.name: why_not(request, h) or f"room for {room[h.name]} ({h.free()} free)" for h in hosts
    }
    asked = f"{n} VMs of {request.describe()}" if n > 1 else request.describe()
    raise NoFitError(asked, reasons)
