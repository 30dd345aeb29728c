"""A KVM host of a cluster: what it is told (:class:`HostSettings`) and reports (:class:`HostInfo`).

Each Ray node that runs microVMs has one host actor (:mod:`firec.cluster._host`),
and the host actor reads its settings where the node's own processes are:
the TOML file named by ``$FIREC_HOST_CONFIG``, else ``/etc/firec/host.toml``
if there is one, else the defaults (every CPU and all memory but a reserve
for guests, the Firecracker firec finds, firec's usual directories). A node
started with ``FIREC_HOST_CONFIG=/etc/firec/gpu-host.toml ray start ...``
passes the variable on to its workers; so do the nodes of
:class:`ray.cluster_utils.Cluster` given ``env_vars``.

A settings file::

    name = "kvm-07"
    vcpus = 32                  # vCPUs handed to guests (default: the CPUs)
    memory_mib = 120000         # memory for guests (default: MemTotal - 1 GiB)
    max_vms = 200
    firecracker = "/usr/local/bin/firecracker"
    jailer = "/usr/local/bin/jailer"
    state_dir = "/run/firec/state/cluster"   # host records; network state in network/
    runtime_dir = "/run/firec"            # sockets, consoles (Config.workdir)
    snapshot_dir = "/var/lib/firec/snapshots"
    [labels]
    zone = "eu-1"

Example::

    >>> info = CpuInfo.parse("vendor_id\\t: GenuineIntel\\nmodel name\\t: Xeon\\n")
    >>> info.vendor, info.model, info.templates
    ('GenuineIntel', 'Xeon', ('C3', 'T2', 'T2S', 'T2CL'))
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firec.errors import ConfigError

__all__ = [
    "HOST_CONFIG_ENV",
    "CpuInfo",
    "HostInfo",
    "HostSettings",
    "VmInfo",
    "VmState",
]

#: The environment variable naming a host's settings file.
HOST_CONFIG_ENV = "FIREC_HOST_CONFIG"
#: Where a host's settings are when the variable is not set.
DEFAULT_HOST_CONFIG = Path("/etc/firec/host.toml")
#: Memory left to the host itself when ``memory_mib`` is not given.
HOST_RESERVE_MIB = 1024

# The static CPU templates each vendor's CPUs take (Firecracker's own table).
_TEMPLATES = {
    "GenuineIntel": ("C3", "T2", "T2S", "T2CL"),
    "AuthenticAMD": ("T2A",),
    "ARM": ("V1N1",),
}


@dataclass(frozen=True)
class CpuInfo:
    """A host's CPU, as far as snapshots care: a snapshot restores on the same vendor.

    Attributes:
        vendor: ``GenuineIntel``, ``AuthenticAMD`` or ``ARM``.
        model: the model name (``/proc/cpuinfo``).
        templates: the static CPU templates Firecracker offers on it.
    """

    vendor: str
    model: str = ""
    templates: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CpuInfo:
        """Read ``/proc/cpuinfo``'s text (the first CPU's lines)."""
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        vendor = fields.get("vendor_id") or ("ARM" if "CPU implementer" in fields else "unknown")
        model = fields.get("model name") or fields.get("CPU part", "")
        return cls(vendor, model, _TEMPLATES.get(vendor, ()))

    @classmethod
    def of_this_host(cls) -> CpuInfo:
        """This host's CPU."""
        return cls.parse(Path("/proc/cpuinfo").read_text())


@dataclass(frozen=True, kw_only=True)
class HostSettings:
    """What one host is told: its name, what it gives guests, where it keeps its files.

    Attributes:
        name: the host's name in the cluster (default: its node's id, shortened).
        vcpus: vCPUs for guests (default: the host's CPUs).
        memory_mib: memory for guests (default: ``MemTotal`` less 1 GiB).
        max_vms: at most this many VMs at once (default: no limit).
        labels: what ``cluster.create(..., labels=...)`` selects hosts by.
        firecracker, jailer: the executables a VM uses when its config names none.
        state_dir: the host's registry of its VMs (default: the ``cluster/``
            subdirectory of firec's registry, so that a host reaps only what
            hosts made; ``firec --state-dir DIR ls`` lists them); its
            ``network/`` subdirectory holds their network state.
        runtime_dir: VMs' sockets and consoles (their ``Config.workdir``).
        snapshot_dir: snapshots taken here, and copies brought from other hosts.
        cpu: what the host says of its CPU (default: ``/proc/cpuinfo``); give
            it only to simulate hosts of other vendors, as the tests do.
        needs_kvm: ``False`` for a host running firec's emulator (no KVM then).
    """

    name: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    max_vms: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    firecracker: Path | None = None
    jailer: Path | None = None
    state_dir: Path | None = None
    runtime_dir: Path | None = None
    snapshot_dir: Path | None = None
    cpu: CpuInfo | None = None
    needs_kvm: bool = True

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> HostSettings:
        """Read a settings file (see the module documentation).

        Raises:
            ConfigError: the file cannot be read, or names an unknown setting.
        """
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("host settings", f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "host settings") -> HostSettings:
        """Build settings from a mapping of the file's keys."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                "host settings",
                f"{source}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
            )
        values: dict[str, Any] = dict(data)
        for key in ("firecracker", "jailer", "state_dir", "runtime_dir", "snapshot_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        if isinstance(values.get("cpu"), Mapping):
            cpu = values["cpu"]
            vendor = str(cpu.get("vendor", ""))
            templates = tuple(cpu.get("templates", _TEMPLATES.get(vendor, ())))
            values["cpu"] = CpuInfo(vendor, str(cpu.get("model", "")), templates)
        values["labels"] = {str(k): str(v) for k, v in dict(values.get("labels", {})).items()}
        return cls(**values)

    @classmethod
    def of_this_node(cls) -> HostSettings:
        """This node's settings: ``$FIREC_HOST_CONFIG``, ``/etc/firec/host.toml``, or defaults."""
        named = os.environ.get(HOST_CONFIG_ENV)
        if named:
            return cls.from_toml(named)
        if DEFAULT_HOST_CONFIG.exists():
            return cls.from_toml(DEFAULT_HOST_CONFIG)
        return cls()

    def resolved(self, node_id: str) -> HostSettings:
        """These settings with every default filled in, for the host on node ``node_id``."""
        from firec._statedirs import network_dir, registry_dir
        from firec.vm.config import runtime_dir

        state_dir = self.state_dir or registry_dir() / "cluster"
        return replace(
            self,
            name=self.name or node_id[:8],
            vcpus=self.vcpus or os.cpu_count() or 1,
            memory_mib=self.memory_mib or max(_mem_total_mib() - HOST_RESERVE_MIB, 0),
            state_dir=state_dir,
            runtime_dir=self.runtime_dir or runtime_dir(),
            snapshot_dir=self.snapshot_dir or network_dir() / "snapshots",
            cpu=self.cpu or CpuInfo.of_this_host(),
        )


def _mem_total_mib() -> int:
    """``MemTotal`` of ``/proc/meminfo``, in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    """What a host reports: who it is, what it has free, and what it can run.

    Attributes:
        name: the host's name; ``node_id``: its Ray node.
        usable: whether VMs may be placed on it; ``reason`` says why not
            (no ``/dev/kvm``, no Firecracker...).
        vcpus, memory_mib: what it gives guests in all.
        vcpus_free, memory_mib_free: what is left of that.
        vms: VMs running (or made) on it now; ``max_vms``: its limit.
        firecracker_version, snapshot_format: its Firecracker, and the
            snapshot format that Firecracker writes.
        cpu: its CPU vendor, model and templates.
        jailer: whether it has a jailer.
        labels: its labels.
    """

    name: str
    node_id: str
    usable: bool
    reason: str = ""
    vcpus: int = 0
    memory_mib: int = 0
    vcpus_free: int = 0
    memory_mib_free: int = 0
    vms: int = 0
    max_vms: int | None = None
    firecracker_version: str = ""
    snapshot_format: str = ""
    cpu: CpuInfo = field(default_factory=lambda: CpuInfo("unknown"))
    jailer: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def taking(self, vcpus: int, memory_mib: int, count: int = 1) -> HostInfo:
        """This report, with ``count`` more VMs of ``vcpus`` and ``memory_mib`` each on it
        (fewer, when ``count`` is negative: VMs gone)."""
        return replace(
            self,
            vms=self.vms + count,
            vcpus_free=self.vcpus_free - count * vcpus,
            memory_mib_free=self.memory_mib_free - count * memory_mib,
        )

    def free(self) -> str:
        """What it has free, for people: ``3 vCPUs, 1024 MiB, 2 more VMs``."""
        text = f"{self.vcpus_free} vCPUs, {self.memory_mib_free} MiB"
        if self.max_vms is not None:
            text += f", {max(self.max_vms - self.vms, 0)} more VMs"
        return text


class VmState(enum.StrEnum):
    """A VM's state as the cluster sees it: Firecracker's, ``Exited``, or ``Lost``.

    ``Lost``: its host (actor or node) died; the VM is never reported running again.
    """

    NOT_STARTED = "Not started"
    RUNNING = "Running"
    PAUSED = "Paused"
    EXITED = "Exited"
    LOST = "Lost"


@dataclass(frozen=True, kw_only=True)
class VmInfo:
    """One VM of the cluster: where it runs, whose it is, what it takes.

    Attributes:
        vm_id: its id (unique on its host).
        host: the host's name; ``node_id``: its Ray node.
        state: its :class:`VmState`.
        vcpus, memory_mib: what it takes.
        owner: the driver that made it (``""`` once detached).
        detached: it outlives its driver.
    """

    vm_id: str
    host: str
    node_id: str
    state: VmState
    vcpus: int
    memory_mib: int
    owner: str = ""
    detached: bool = False
