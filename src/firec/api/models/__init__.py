"""Typed models of every body of the Firecracker HTTP API (1.0 to 1.16).

One class per definition of Firecracker's API specification, named exactly
like it (:class:`MachineConfiguration`, :class:`Drive`...). Fields carry the
specification's constraints and refuse bad values at construction with
:class:`firec.errors.ValidationError`, which names the offending field.
Enumerations are :class:`enum.StrEnum` classes; fields also take the plain
string. The models are the union of every version: fields a version lacks
are refused per version by :func:`firec.api.versions.check_body`, not here.

Example::

    >>> from firec.api.models import Drive, MachineConfiguration, RateLimiter, TokenBucket
    >>> machine = MachineConfiguration(vcpu_count=2, mem_size_mib=256, huge_pages="2M")
    >>> machine.to_api()
    {'vcpu_count': 2, 'mem_size_mib': 256, 'huge_pages': '2M'}
    >>> drive = Drive(
    ...     drive_id="rootfs", is_root_device=True, is_read_only=False,
    ...     path_on_host="/srv/rootfs.ext4",
    ...     rate_limiter=RateLimiter(bandwidth=TokenBucket(size=1 << 20, refill_time=100)),
    ... )
    >>> drive.to_api()["rate_limiter"]
    {'bandwidth': {'size': 1048576, 'refill_time': 100}}
    >>> MachineConfiguration(vcpu_count=64, mem_size_mib=256)
    Traceback (most recent call last):
    ...
    firec.errors.ValidationError: vcpu_count: must be at most 32
    >>> MachineConfiguration.from_api({"vcpu_count": 1, "mem_size_mib": 128}).vcpu_count
    1

``to_api()`` gives the JSON body (API key names, unset fields left out);
``Model.from_api(data)`` reads a body Firecracker sent, ignoring keys a
newer Firecracker added. :data:`MODELS` maps each definition name to its
class.
"""

from __future__ import annotations

from firec.api.models.balloon import (
    Balloon,
    BalloonHintingStatus,
    BalloonStartCmd,
    BalloonStats,
    BalloonStatsUpdate,
    BalloonUpdate,
)
from firec.api.models.base import APIModel, ResponseModel
from firec.api.models.boot import BootSource
from firec.api.models.cpu import (
    ArmRegisterModifier,
    CpuConfig,
    CpuidLeafModifier,
    CpuidRegister,
    CpuidRegisterModifier,
    CpuTemplate,
    MsrModifier,
    VcpuFeatures,
)
from firec.api.models.devices import (
    EntropyDevice,
    MemoryHotplugConfig,
    MemoryHotplugSizeUpdate,
    MemoryHotplugStatus,
    PartialPmem,
    Pmem,
    SerialDevice,
)
from firec.api.models.drive import CacheType, Drive, IoEngine, PartialDrive
from firec.api.models.instance import (
    ActionType,
    Error,
    FirecrackerVersion,
    FullVmConfiguration,
    InstanceActionInfo,
    InstanceInfo,
    InstanceState,
    Vm,
    VmState,
)
from firec.api.models.logging import Logger, LogLevel, Metrics
from firec.api.models.machine import HugePages, MachineConfiguration
from firec.api.models.mmds import MmdsConfig, MmdsContentsObject, MmdsVersion
from firec.api.models.network import NetworkInterface, PartialNetworkInterface
from firec.api.models.ratelimit import RateLimiter, TokenBucket
from firec.api.models.snapshot import (
    MemoryBackend,
    MemoryBackendType,
    NetworkOverride,
    SnapshotCreateParams,
    SnapshotLoadParams,
    SnapshotType,
    VsockOverride,
)
from firec.api.models.vsock import Vsock

__all__ = [
    "MODELS",
    "APIModel",
    "ActionType",
    "ArmRegisterModifier",
    "Balloon",
    "BalloonHintingStatus",
    "BalloonStartCmd",
    "BalloonStats",
    "BalloonStatsUpdate",
    "BalloonUpdate",
    "BootSource",
    "CacheType",
    "CpuConfig",
    "CpuTemplate",
    "CpuidLeafModifier",
    "CpuidRegister",
    "CpuidRegisterModifier",
    "Drive",
    "EntropyDevice",
    "Error",
    "FirecrackerVersion",
    "FullVmConfiguration",
    "HugePages",
    "InstanceActionInfo",
    "InstanceInfo",
    "InstanceState",
    "IoEngine",
    "LogLevel",
    "Logger",
    "MachineConfiguration",
    "MemoryBackend",
    "MemoryBackendType",
    "MemoryHotplugConfig",
    "MemoryHotplugSizeUpdate",
    "MemoryHotplugStatus",
    "Metrics",
    "MmdsConfig",
    "MmdsContentsObject",
    "MmdsVersion",
    "MsrModifier",
    "NetworkInterface",
    "NetworkOverride",
    "PartialDrive",
    "PartialNetworkInterface",
    "PartialPmem",
    "Pmem",
    "RateLimiter",
    "ResponseModel",
    "SerialDevice",
    "SnapshotCreateParams",
    "SnapshotLoadParams",
    "SnapshotType",
    "TokenBucket",
    "VcpuFeatures",
    "Vm",
    "VmState",
    "Vsock",
    "VsockOverride",
    "model_for",
]

MODELS: dict[str, type[APIModel]] = {
    cls.api_name: cls
    for cls in (
        ArmRegisterModifier,
        Balloon,
        BalloonHintingStatus,
        BalloonStartCmd,
        BalloonStats,
        BalloonStatsUpdate,
        BalloonUpdate,
        BootSource,
        CpuConfig,
        CpuidLeafModifier,
        CpuidRegisterModifier,
        Drive,
        EntropyDevice,
        Error,
        FirecrackerVersion,
        FullVmConfiguration,
        InstanceActionInfo,
        InstanceInfo,
        Logger,
        MachineConfiguration,
        MemoryBackend,
        MemoryHotplugConfig,
        MemoryHotplugSizeUpdate,
        MemoryHotplugStatus,
        Metrics,
        MmdsConfig,
        MmdsContentsObject,
        MsrModifier,
        NetworkInterface,
        NetworkOverride,
        PartialDrive,
        PartialNetworkInterface,
        PartialPmem,
        Pmem,
        RateLimiter,
        SerialDevice,
        SnapshotCreateParams,
        SnapshotLoadParams,
        TokenBucket,
        VcpuFeatures,
        Vm,
        Vsock,
        VsockOverride,
    )
}
"""Every object definition of the API specification, by name, to its model class.

``CpuTemplate`` is a string enumeration, not an object, so it is not here.
"""


def model_for(definition: str) -> type[APIModel]:
    """Return the model class of an API definition name (``"Drive"`` -> :class:`Drive`).

    Raises:
        KeyError: no such object definition.
    """
    try:
        return MODELS[definition]
    except KeyError:
        raise KeyError(f"no model for API definition {definition!r}") from None
