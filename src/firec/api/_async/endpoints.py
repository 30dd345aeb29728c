"""The endpoints of the low-level clients, every one a request and no more.

:class:`firec.AsyncClient` holds the connection (its settings, the version it
learns, one request sent: ``_call``) and the two endpoints that teach it the
version (``GET /`` and ``GET /version``); the rest of the API is here, grouped
as the API groups it: actions and the VM's state, boot source, machine and
CPU, drives and pmem, network, the other devices, logger and metrics, MMDS,
balloon, snapshots. Each takes its body as a model or a mapping of its fields.
"""

# This file is the one source of both flavours: endpoints.py (under the synchronous
# firec.Client) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from firec.api import models
from firec.api._request import (
    DEFAULT,
    TimeoutArg,
    as_model,
    json_object,
    partial_body,
    shortcut_model,
)

__all__ = ["Endpoints"]


class Endpoints:
    """The endpoints of :class:`firec.AsyncClient` but ``GET /`` and ``GET /version``.

    Each method is one ``_call`` of the client that inherits them.
    """

    if TYPE_CHECKING:

        async def _call(
            self,
            operation_id: str,
            body: Any = None,
            *,
            timeout: TimeoutArg,
            **params: str,
        ) -> Any: ...

    # -- actions, the VM's state and configuration ---------------------------

    async def create_action(
        self,
        action: models.InstanceActionInfo | models.ActionType | str | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /actions``: ``InstanceStart``, ``SendCtrlAltDel`` or ``FlushMetrics``.

        ``action`` is the action type (``"InstanceStart"``, exactly so spelled) or
        a whole :class:`~firec.api.models.InstanceActionInfo`.
        """
        info = shortcut_model(models.InstanceActionInfo, "action_type", action, "action")
        await self._call("createSyncAction", info, timeout=timeout)

    async def patch_vm(
        self,
        state: models.Vm | models.VmState | str | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /vm``: pause (``"Paused"``) or resume (``"Resumed"``) the microVM."""
        vm = shortcut_model(models.Vm, "state", state, "state")
        await self._call("patchVm", vm, timeout=timeout)

    async def get_vm_config(self, *, timeout: TimeoutArg = DEFAULT) -> models.FullVmConfiguration:
        """``GET /vm/config``: the full configuration of the microVM."""
        result: models.FullVmConfiguration = await self._call("getExportVmConfig", timeout=timeout)
        return result

    # -- boot source, machine, cpu -------------------------------------------

    async def put_boot_source(
        self, boot_source: models.BootSource | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /boot-source``: the kernel, initrd and kernel command line. Pre-boot only."""
        boot_source = as_model(models.BootSource, boot_source, "boot_source")
        await self._call("putGuestBootSource", boot_source, timeout=timeout)

    async def get_machine_config(
        self, *, timeout: TimeoutArg = DEFAULT
    ) -> models.MachineConfiguration:
        """``GET /machine-config``: vCPUs, memory and the other machine settings."""
        result: models.MachineConfiguration = await self._call(
            "getMachineConfiguration", timeout=timeout
        )
        return result

    async def put_machine_config(
        self,
        config: models.MachineConfiguration | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /machine-config``: set the whole machine configuration. Pre-boot only."""
        config = as_model(models.MachineConfiguration, config, "config")
        await self._call("putMachineConfiguration", config, timeout=timeout)

    async def patch_machine_config(
        self,
        update: models.MachineConfiguration | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /machine-config``: change some machine settings. Pre-boot only.

        ``update`` is a mapping of just the fields to change (each validated),
        e.g. ``{"vcpu_count": 2}``, or a whole :class:`~firec.api.models.MachineConfiguration`.
        """
        body: Any = update
        if not isinstance(update, models.MachineConfiguration):
            body = partial_body(models.MachineConfiguration, update, "update")
        await self._call("patchMachineConfiguration", body, timeout=timeout)

    async def put_cpu_config(
        self, cpu_config: models.CpuConfig | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /cpu-config``: a custom CPU template (Firecracker 1.4+). Pre-boot only."""
        cpu_config = as_model(models.CpuConfig, cpu_config, "cpu_config")
        await self._call("putCpuConfiguration", cpu_config, timeout=timeout)

    # -- block devices -------------------------------------------------------

    async def put_drive(
        self, drive: models.Drive | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /drives/{drive_id}``: add or replace a block device. Pre-boot only."""
        drive = as_model(models.Drive, drive, "drive")
        await self._call("putGuestDriveByID", drive, timeout=timeout, drive_id=drive.drive_id)

    async def patch_drive(
        self, drive: models.PartialDrive | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /drives/{drive_id}``: swap a drive's backing file or rate limiter. Post-boot."""
        drive = as_model(models.PartialDrive, drive, "drive")
        await self._call("patchGuestDriveByID", drive, timeout=timeout, drive_id=drive.drive_id)

    async def put_pmem(
        self, pmem: models.Pmem | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /pmem/{id}``: add a virtio-pmem device (Firecracker 1.14+). Pre-boot only."""
        pmem = as_model(models.Pmem, pmem, "pmem")
        await self._call("putGuestPmemByID", pmem, timeout=timeout, id=pmem.id)

    async def patch_pmem(
        self, pmem: models.PartialPmem | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /pmem/{id}``: update a pmem device (Firecracker 1.16+)."""
        pmem = as_model(models.PartialPmem, pmem, "pmem")
        await self._call("patchGuestPmemByID", pmem, timeout=timeout, id=pmem.id)

    # -- network -------------------------------------------------------------

    async def put_network_interface(
        self, iface: models.NetworkInterface | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /network-interfaces/{iface_id}``: add a virtio-net device. Pre-boot only."""
        iface = as_model(models.NetworkInterface, iface, "iface")
        await self._call(
            "putGuestNetworkInterfaceByID", iface, timeout=timeout, iface_id=iface.iface_id
        )

    async def patch_network_interface(
        self,
        iface: models.PartialNetworkInterface | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /network-interfaces/{iface_id}``: update rate limiters. Post-boot."""
        iface = as_model(models.PartialNetworkInterface, iface, "iface")
        await self._call(
            "patchGuestNetworkInterfaceByID", iface, timeout=timeout, iface_id=iface.iface_id
        )

    # -- vsock, entropy, serial, memory hotplug ------------------------------

    async def put_vsock(
        self, vsock: models.Vsock | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /vsock``: the virtio-vsock device. Pre-boot only."""
        vsock = as_model(models.Vsock, vsock, "vsock")
        await self._call("putGuestVsock", vsock, timeout=timeout)

    async def put_entropy(
        self, entropy: models.EntropyDevice | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /entropy``: the virtio-rng device (Firecracker 1.4+). Pre-boot only."""
        entropy = as_model(models.EntropyDevice, entropy, "entropy")
        await self._call("putEntropyDevice", entropy, timeout=timeout)

    async def put_serial(
        self, serial: models.SerialDevice | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /serial``: where the serial console goes (Firecracker 1.14+). Pre-boot only."""
        serial = as_model(models.SerialDevice, serial, "serial")
        await self._call("putSerialDevice", serial, timeout=timeout)

    async def put_memory_hotplug(
        self,
        config: models.MemoryHotplugConfig | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /hotplug/memory``: the hotpluggable memory region (Firecracker 1.14+)."""
        config = as_model(models.MemoryHotplugConfig, config, "config")
        await self._call("putMemoryHotplug", config, timeout=timeout)

    async def patch_memory_hotplug(
        self,
        update: models.MemoryHotplugSizeUpdate | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /hotplug/memory``: resize the plugged memory. Post-boot."""
        update = as_model(models.MemoryHotplugSizeUpdate, update, "update")
        await self._call("patchMemoryHotplug", update, timeout=timeout)

    async def get_memory_hotplug(
        self, *, timeout: TimeoutArg = DEFAULT
    ) -> models.MemoryHotplugStatus:
        """``GET /hotplug/memory``: the hotplug region's size and plugged amount."""
        result: models.MemoryHotplugStatus = await self._call("getMemoryHotplug", timeout=timeout)
        return result

    # -- logger, metrics -----------------------------------------------------

    async def put_logger(
        self, logger: models.Logger | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /logger``: where and how Firecracker logs."""
        logger = as_model(models.Logger, logger, "logger")
        await self._call("putLogger", logger, timeout=timeout)

    async def put_metrics(
        self, metrics: models.Metrics | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /metrics``: where Firecracker writes its metrics."""
        metrics = as_model(models.Metrics, metrics, "metrics")
        await self._call("putMetrics", metrics, timeout=timeout)

    # -- MMDS ----------------------------------------------------------------

    async def put_mmds_config(
        self, config: models.MmdsConfig | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /mmds/config``: MMDS version, interfaces and address. Pre-boot only."""
        config = as_model(models.MmdsConfig, config, "config")
        await self._call("putMmdsConfig", config, timeout=timeout)

    async def put_mmds(
        self,
        data: Mapping[str, Any] | models.MmdsContentsObject,
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /mmds``: replace the whole MMDS data store with ``data`` (a JSON object)."""
        await self._call("putMmds", json_object(data, "data"), timeout=timeout)

    async def patch_mmds(
        self,
        data: Mapping[str, Any] | models.MmdsContentsObject,
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /mmds``: merge ``data`` into the MMDS data store (RFC 7396)."""
        await self._call("patchMmds", json_object(data, "data"), timeout=timeout)

    async def get_mmds(self, *, timeout: TimeoutArg = DEFAULT) -> Any:
        """``GET /mmds``: the MMDS data store's contents."""
        return await self._call("getMmds", timeout=timeout)

    # -- balloon -------------------------------------------------------------

    async def put_balloon(
        self, balloon: models.Balloon | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /balloon``: the balloon device. Pre-boot only."""
        balloon = as_model(models.Balloon, balloon, "balloon")
        await self._call("putBalloon", balloon, timeout=timeout)

    async def get_balloon(self, *, timeout: TimeoutArg = DEFAULT) -> models.Balloon:
        """``GET /balloon``: the balloon device's configuration."""
        result: models.Balloon = await self._call("describeBalloonConfig", timeout=timeout)
        return result

    async def patch_balloon(
        self, update: models.BalloonUpdate | Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /balloon``: change the balloon's target size. Post-boot."""
        update = as_model(models.BalloonUpdate, update, "update")
        await self._call("patchBalloon", update, timeout=timeout)

    async def get_balloon_stats(self, *, timeout: TimeoutArg = DEFAULT) -> models.BalloonStats:
        """``GET /balloon/statistics``: the latest statistics the guest's driver reported."""
        result: models.BalloonStats = await self._call("describeBalloonStats", timeout=timeout)
        return result

    async def patch_balloon_stats(
        self,
        update: models.BalloonStatsUpdate | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /balloon/statistics``: change the statistics polling interval. Post-boot."""
        update = as_model(models.BalloonStatsUpdate, update, "update")
        await self._call("patchBalloonStatsInterval", update, timeout=timeout)

    async def start_balloon_hinting(
        self,
        command: models.BalloonStartCmd | Mapping[str, Any] | None = None,
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /balloon/hinting/start``: start free page hinting (Firecracker 1.14+)."""
        body = None if command is None else as_model(models.BalloonStartCmd, command, "command")
        await self._call("startBalloonHinting", body, timeout=timeout)

    async def get_balloon_hinting(
        self, *, timeout: TimeoutArg = DEFAULT
    ) -> models.BalloonHintingStatus:
        """``GET /balloon/hinting/status``: the state of free page hinting."""
        result: models.BalloonHintingStatus = await self._call(
            "describeBalloonHinting", timeout=timeout
        )
        return result

    async def stop_balloon_hinting(self, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PATCH /balloon/hinting/stop``: stop free page hinting."""
        await self._call("stopBalloonHinting", timeout=timeout)

    # -- snapshots -----------------------------------------------------------

    async def create_snapshot(
        self,
        params: models.SnapshotCreateParams | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /snapshot/create``: write the paused microVM's state and memory to files."""
        params = as_model(models.SnapshotCreateParams, params, "params")
        await self._call("createSnapshot", params, timeout=timeout)

    async def load_snapshot(
        self,
        params: models.SnapshotLoadParams | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /snapshot/load``: restore a snapshot into this (unconfigured) VMM."""
        params = as_model(models.SnapshotLoadParams, params, "params")
        await self._call("loadSnapshot", params, timeout=timeout)
