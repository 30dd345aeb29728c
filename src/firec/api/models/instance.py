"""The instance as a whole: actions, run state, identity, version, errors, full configuration."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AliasChoices, Field

from firec.api.models.balloon import Balloon
from firec.api.models.base import APIModel, EnumText, ResponseModel, StrictStr
from firec.api.models.boot import BootSource
from firec.api.models.cpu import CpuConfig
from firec.api.models.devices import EntropyDevice, MemoryHotplugConfig, Pmem
from firec.api.models.drive import Drive
from firec.api.models.logging import Logger, Metrics
from firec.api.models.machine import MachineConfiguration
from firec.api.models.mmds import MmdsConfig
from firec.api.models.network import NetworkInterface
from firec.api.models.vsock import Vsock

__all__ = [
    "ActionType",
    "Error",
    "FirecrackerVersion",
    "FullVmConfiguration",
    "InstanceActionInfo",
    "InstanceInfo",
    "InstanceState",
    "Vm",
    "VmState",
]


class ActionType(StrEnum):
    """A synchronous action (``InstanceActionInfo.action_type``)."""

    FLUSH_METRICS = "FlushMetrics"
    INSTANCE_START = "InstanceStart"
    SEND_CTRL_ALT_DEL = "SendCtrlAltDel"


class InstanceActionInfo(APIModel):
    """An action to perform now: start the guest, flush metrics, send Ctrl+Alt+Del.

    Endpoint: ``PUT /actions``.
    """

    action_type: Annotated[ActionType, EnumText] = Field(
        description="Enumeration indicating what type of action is contained in the payload."
    )


class VmState(StrEnum):
    """The requested run state of a booted microVM (``Vm.state``)."""

    PAUSED = "Paused"
    RESUMED = "Resumed"


class Vm(APIModel):
    """Pause or resume the microVM.

    Endpoint: ``PATCH /vm``.
    """

    state: Annotated[VmState, EnumText] = Field(description="Paused or Resumed.")


class InstanceState(StrEnum):
    """The state of a Firecracker instance (``InstanceInfo.state``)."""

    NOT_STARTED = "Not started"
    RUNNING = "Running"
    PAUSED = "Paused"


class InstanceInfo(ResponseModel):
    """Identity and state of the Firecracker instance.

    Endpoint: ``GET /``.
    """

    app_name: StrictStr = Field(description="Application name.")
    id: StrictStr = Field(description="MicroVM / instance ID.")
    state: InstanceState = Field(
        description="The current detailed state (Not started, Running, Paused) of the instance."
    )
    vmm_version: StrictStr = Field(description="MicroVM hypervisor build version.")


class FirecrackerVersion(ResponseModel):
    """The Firecracker build version.

    Endpoint: ``GET /version``.
    """

    firecracker_version: StrictStr = Field(description="Firecracker build version.")


class Error(ResponseModel):
    """Firecracker's explanation of a refused request (the body of every 4xx answer)."""

    fault_message: StrictStr | None = Field(
        default=None, description="A description of the error condition."
    )


def _names(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class FullVmConfiguration(ResponseModel):
    """The whole microVM configuration, as ``GET /vm/config`` exports it.

    Endpoint: ``GET /vm/config``. The same shape is what ``firecracker
    --config-file`` reads. Keys are hyphenated in JSON (``"boot-source"``), as
    every Firecracker from 1.0.0 sends them; the names the 1.0 specification
    wrongly documented (``boot_source``, ``block_devices``...) are accepted too.
    """

    balloon: Balloon | None = Field(
        default=None,
        description="The balloon device.",
        validation_alias=_names("balloon", "balloon_device"),
    )
    drives: list[Drive] | None = Field(
        default=None,
        validation_alias=_names("drives", "block_devices"),
        description="Configurations for all block devices.",
    )
    boot_source: BootSource | None = Field(
        default=None,
        description="The guest kernel.",
        validation_alias=_names("boot-source", "boot_source"),
        serialization_alias="boot-source",
    )
    cpu_config: CpuConfig | None = Field(
        default=None,
        description="The custom CPU template.",
        validation_alias=_names("cpu-config", "cpu_config"),
        serialization_alias="cpu-config",
    )
    logger: Logger | None = Field(default=None, description="The logger.")
    machine_config: MachineConfiguration | None = Field(
        default=None,
        description="vCPUs, memory and machine options.",
        validation_alias=_names("machine-config", "machine_config"),
        serialization_alias="machine-config",
    )
    metrics: Metrics | None = Field(default=None, description="The metrics output.")
    memory_hotplug: MemoryHotplugConfig | None = Field(
        default=None,
        description="The hotpluggable memory device (1.14+).",
        validation_alias=_names("memory-hotplug", "memory_hotplug"),
        serialization_alias="memory-hotplug",
    )
    mmds_config: MmdsConfig | None = Field(
        default=None,
        description="The MMDS configuration.",
        validation_alias=_names("mmds-config", "mmds_config"),
        serialization_alias="mmds-config",
    )
    network_interfaces: list[NetworkInterface] | None = Field(
        default=None,
        validation_alias=_names("network-interfaces", "network_interfaces", "net_devices"),
        serialization_alias="network-interfaces",
        description="Configurations for all net devices.",
    )
    pmem: list[Pmem] | None = Field(
        default=None, description="Configurations for all pmem devices."
    )
    vsock: Vsock | None = Field(
        default=None,
        description="The vsock device.",
        validation_alias=_names("vsock", "vsock_device"),
    )
    entropy: EntropyDevice | None = Field(default=None, description="The entropy device.")
