"""Every operation of the Firecracker HTTP API, as data.

Each :class:`Operation` names one endpoint (HTTP method and path template,
exactly as in Firecracker's swagger spec), the spec's ``operationId``, the
spec definition of its request body and of its ``200`` response, and the
method of :class:`firec.Client` / :class:`firec.AsyncClient` that calls it.

This table is what the clients encode requests from, and what the test suite
checks against the official spec of every Firecracker version.

>>> from firec.api.operations import OPERATIONS_BY_ID
>>> op = OPERATIONS_BY_ID["putGuestDriveByID"]
>>> op.method, op.path, op.body, op.client_method
('PUT', '/drives/{drive_id}', 'Drive', 'put_drive')
>>> op.url(drive_id="rootfs")
'/drives/rootfs'
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

__all__ = [
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "MAX_PAYLOAD_FLAG",
    "OPERATIONS",
    "OPERATIONS_BY_ID",
    "Operation",
    "payload_limit_in_args",
]

#: The largest request body (bytes) Firecracker's API takes unless started with
#: ``--http-api-max-payload-size``; a larger one gets a 400 that is not JSON.
DEFAULT_MAX_PAYLOAD_SIZE = 51200
#: The Firecracker flag that sets that limit (every release from 1.0 has it).
MAX_PAYLOAD_FLAG = "--http-api-max-payload-size"

Method = Literal["GET", "PUT", "PATCH"]

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Operation:
    """One endpoint of the Firecracker API.

    Attributes:
        operation_id: the spec's ``operationId``.
        method: the HTTP method.
        path: the path template, e.g. ``"/drives/{drive_id}"``.
        client_method: the name of the client method that calls it.
        body: the spec definition of the request body, if it takes one.
        response: the spec definition of the ``200`` response body, if any
            (``"object"`` for free-form JSON such as MMDS contents).
        slow: whether the operation may legitimately take long (snapshots),
            so that it gets the clients' long timeout.
    """

    operation_id: str
    method: Method
    path: str
    client_method: str
    body: str | None = None
    response: str | None = None
    slow: bool = False

    @property
    def path_params(self) -> tuple[str, ...]:
        """Names of the parameters in :attr:`path`."""
        return tuple(_PARAM.findall(self.path))

    def url(self, **params: str) -> str:
        """The request path with ``params`` filled in (each URL-quoted)."""
        return _PARAM.sub(lambda m: quote(params[m.group(1)], safe=""), self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _op(
    operation_id: str,
    method: Method,
    path: str,
    client_method: str,
    body: str | None = None,
    response: str | None = None,
    *,
    slow: bool = False,
) -> Operation:
    return Operation(operation_id, method, path, client_method, body, response, slow)


OPERATIONS: tuple[Operation, ...] = (
    _op("describeInstance", "GET", "/", "get_instance_info", response="InstanceInfo"),
    _op("createSyncAction", "PUT", "/actions", "create_action", "InstanceActionInfo"),
    _op("describeBalloonConfig", "GET", "/balloon", "get_balloon", response="Balloon"),
    _op("putBalloon", "PUT", "/balloon", "put_balloon", "Balloon"),
    _op("patchBalloon", "PATCH", "/balloon", "patch_balloon", "BalloonUpdate"),
    _op(
        "describeBalloonStats",
        "GET",
        "/balloon/statistics",
        "get_balloon_stats",
        response="BalloonStats",
    ),
    _op(
        "patchBalloonStatsInterval",
        "PATCH",
        "/balloon/statistics",
        "patch_balloon_stats",
        "BalloonStatsUpdate",
    ),
    _op(
        "startBalloonHinting",
        "PATCH",
        "/balloon/hinting/start",
        "start_balloon_hinting",
        "BalloonStartCmd",
    ),
    _op(
        "describeBalloonHinting",
        "GET",
        "/balloon/hinting/status",
        "get_balloon_hinting",
        response="BalloonHintingStatus",
    ),
    _op("stopBalloonHinting", "PATCH", "/balloon/hinting/stop", "stop_balloon_hinting"),
    _op("putGuestBootSource", "PUT", "/boot-source", "put_boot_source", "BootSource"),
    _op("putCpuConfiguration", "PUT", "/cpu-config", "put_cpu_config", "CpuConfig"),
    _op("putGuestDriveByID", "PUT", "/drives/{drive_id}", "put_drive", "Drive"),
    _op("patchGuestDriveByID", "PATCH", "/drives/{drive_id}", "patch_drive", "PartialDrive"),
    _op("putGuestPmemByID", "PUT", "/pmem/{id}", "put_pmem", "Pmem"),
    _op("patchGuestPmemByID", "PATCH", "/pmem/{id}", "patch_pmem", "PartialPmem"),
    _op("putLogger", "PUT", "/logger", "put_logger", "Logger"),
    _op(
        "getMachineConfiguration",
        "GET",
        "/machine-config",
        "get_machine_config",
        response="MachineConfiguration",
    ),
    _op(
        "putMachineConfiguration",
        "PUT",
        "/machine-config",
        "put_machine_config",
        "MachineConfiguration",
    ),
    _op(
        "patchMachineConfiguration",
        "PATCH",
        "/machine-config",
        "patch_machine_config",
        "MachineConfiguration",
    ),
    _op("putMetrics", "PUT", "/metrics", "put_metrics", "Metrics"),
    _op("putMmds", "PUT", "/mmds", "put_mmds", "MmdsContentsObject"),
    _op("patchMmds", "PATCH", "/mmds", "patch_mmds", "MmdsContentsObject"),
    _op("getMmds", "GET", "/mmds", "get_mmds", response="object"),
    _op("putMmdsConfig", "PUT", "/mmds/config", "put_mmds_config", "MmdsConfig"),
    _op("putEntropyDevice", "PUT", "/entropy", "put_entropy", "EntropyDevice"),
    _op("putSerialDevice", "PUT", "/serial", "put_serial", "SerialDevice"),
    _op("putMemoryHotplug", "PUT", "/hotplug/memory", "put_memory_hotplug", "MemoryHotplugConfig"),
    _op(
        "patchMemoryHotplug",
        "PATCH",
        "/hotplug/memory",
        "patch_memory_hotplug",
        "MemoryHotplugSizeUpdate",
    ),
    _op(
        "getMemoryHotplug",
        "GET",
        "/hotplug/memory",
        "get_memory_hotplug",
        response="MemoryHotplugStatus",
    ),
    _op(
        "putGuestNetworkInterfaceByID",
        "PUT",
        "/network-interfaces/{iface_id}",
        "put_network_interface",
        "NetworkInterface",
    ),
    _op(
        "patchGuestNetworkInterfaceByID",
        "PATCH",
        "/network-interfaces/{iface_id}",
        "patch_network_interface",
        "PartialNetworkInterface",
    ),
    _op(
        "createSnapshot",
        "PUT",
        "/snapshot/create",
        "create_snapshot",
        "SnapshotCreateParams",
        slow=True,
    ),
    _op("loadSnapshot", "PUT", "/snapshot/load", "load_snapshot", "SnapshotLoadParams", slow=True),
    _op("getFirecrackerVersion", "GET", "/version", "get_version", response="FirecrackerVersion"),
    _op("patchVm", "PATCH", "/vm", "patch_vm", "Vm"),
    _op("getExportVmConfig", "GET", "/vm/config", "get_vm_config", response="FullVmConfiguration"),
    _op("putGuestVsock", "PUT", "/vsock", "put_vsock", "Vsock"),
)

OPERATIONS_BY_ID: dict[str, Operation] = {op.operation_id: op for op in OPERATIONS}


def payload_limit_in_args(args: Sequence[str]) -> int | None:
    """The value of :data:`MAX_PAYLOAD_FLAG` in a Firecracker command line, if given.

    ``None`` when absent or not a number (Firecracker refuses to start then);
    Firecracker takes the flag and its value as two arguments only.
    """
    for flag, value in itertools.pairwise(args):
        if flag == MAX_PAYLOAD_FLAG:
            return int(value) if value.isascii() and value.isdigit() else None
    return None
