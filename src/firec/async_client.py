"""The low-level asyncio client: one coroutine per Firecracker API operation.

Example (against firec's emulator; the same works against a real Firecracker)::

    import asyncio, firec
    from firec.models import BootSource, MachineConfiguration
    from firec.testing import Emulator

    async def main() -> None:
        with Emulator() as emu:
            async with firec.AsyncClient(emu.socket_path) as client:
                await client.put_machine_config(
                    MachineConfiguration(vcpu_count=2, mem_size_mib=256)
                )
                config = await client.get_machine_config()
                print(config.vcpu_count)  # 2

    asyncio.run(main())
"""

# This file is the one source of both clients: client.py (the synchronous
# firec.Client) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from . import models
from ._request import (
    DEFAULT,
    TimeoutArg,
    build_request,
    check_request,
    decode,
    encode_body,
    needs_version,
    partial_body,
)
from .operations import OPERATIONS_BY_ID, Operation
from .transport import RequestWatch, async_unix_transport, transport_error
from .versions import Version

__all__ = ["AsyncClient"]

#: Seconds a call may take before :class:`firec.errors.TimeoutError`.
DEFAULT_TIMEOUT = 10.0
#: Seconds a snapshot create/load may take.
DEFAULT_SLOW_TIMEOUT = 300.0


class AsyncClient:
    """Talks to one Firecracker over its API socket, asynchronously.

    Args:
        socket_path: the VMM's ``--api-sock``.
        timeout: seconds any call may take (``None``: no limit); each method also
            takes ``timeout=`` for that call alone.
        slow_timeout: seconds a snapshot create or load may take.
        version: the Firecracker version, when known; otherwise it is asked once
            (``GET /version``) before the first checked call and cached.
        check_version: refuse, before sending, endpoints, fields and values that
            the connected version lacks (:class:`firec.errors.UnsupportedError`).
        transport: an httpx transport to use instead of the Unix socket.

    Connections are kept alive and reused. Errors: :class:`firec.errors.APIError`
    when Firecracker refuses (with its ``fault_message``),
    :class:`firec.errors.ConnectError` / :class:`firec.errors.TimeoutError` naming
    the socket, :class:`firec.errors.ValidationError` for bad values.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        slow_timeout: float | None = DEFAULT_SLOW_TIMEOUT,
        version: str | Version | None = None,
        check_version: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self.check_version = check_version
        self._version = Version.parse(version) if isinstance(version, str) else version
        self._transport = transport or async_unix_transport(self.socket_path)
        self._closed = False
        self._urls: dict[str, httpx.URL] = {}
        #: bodiless operations the version check already let through

    def give_up_when(self, watch: RequestWatch | None) -> None:
        """Have every request ask ``watch`` whether its answer will ever come.

        While an answer is awaited, ``watch.check()`` is called every
        ``watch.interval`` seconds; when it gives a reason, the request fails
        at once with :class:`~firec.errors.ConnectError` saying it, instead
        of waiting for its timeout. :class:`firec.Machine` sets its VMM's
        :class:`~firec.process.ExitWatch` here: a request then ends as soon as
        the VMM exits, and never keeps a stopping Firecracker from exiting.
        Only firec's own Unix socket transports take a watch; ``None`` removes it.
        """
        if hasattr(self._transport, "watch"):
            self._transport.watch = watch

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} socket_path={self.socket_path!r}>"

    async def firecracker_version(self) -> Version:
        """The connected Firecracker's version, asked once and cached."""
        if self._version is None:
            answer = await self.get_version()
            self._version = Version.parse(answer.firecracker_version)
        return self._version

    async def _call(
        self,
        operation_id: str,
        body: Any = None,
        *,
        timeout: TimeoutArg,
        **params: str,
    ) -> Any:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed: make a new client")
        op: Operation = OPERATIONS_BY_ID[operation_id]
        data = encode_body(body)
        if self.check_version and needs_version(op, data):
            check_request(op, data, self._version or await self.firecracker_version())
        if timeout is DEFAULT:
            timeout = self.slow_timeout if op.slow else self.timeout
        request = build_request(
            op.method, op.url(**params) if params else op.path, data, timeout, self._urls
        )
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
            await response.aread()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.socket_path) from exc
        return decode(op, response)

    # -- instance ------------------------------------------------------------

    async def get_instance_info(self, *, timeout: TimeoutArg = DEFAULT) -> models.InstanceInfo:
        """``GET /``: the instance's id, state and VMM version (remembered for checks)."""
        result: models.InstanceInfo = await self._call("describeInstance", timeout=timeout)
        if self._version is None:
            self._version = Version.parse(result.vmm_version)
        return result

    async def get_version(self, *, timeout: TimeoutArg = DEFAULT) -> models.FirecrackerVersion:
        """``GET /version``: the Firecracker version."""
        result: models.FirecrackerVersion = await self._call(
            "getFirecrackerVersion", timeout=timeout
        )
        return result

    async def create_action(
        self,
        action: models.InstanceActionInfo | models.ActionType | str,
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PUT /actions``: ``InstanceStart``, ``SendCtrlAltDel`` or ``FlushMetrics``."""
        if not isinstance(action, models.InstanceActionInfo):
            action = models.InstanceActionInfo(action_type=models.ActionType(action))
        await self._call("createSyncAction", action, timeout=timeout)

    async def patch_vm(
        self, state: models.Vm | models.VmState | str, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /vm``: pause (``"Paused"``) or resume (``"Resumed"``) the microVM."""
        if not isinstance(state, models.Vm):
            state = models.Vm(state=models.VmState(state))
        await self._call("patchVm", state, timeout=timeout)

    async def get_vm_config(self, *, timeout: TimeoutArg = DEFAULT) -> models.FullVmConfiguration:
        """``GET /vm/config``: the full configuration of the microVM."""
        result: models.FullVmConfiguration = await self._call("getExportVmConfig", timeout=timeout)
        return result

    # -- boot source, machine, cpu -------------------------------------------

    async def put_boot_source(
        self, boot_source: models.BootSource, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /boot-source``: the kernel, initrd and kernel command line. Pre-boot only."""
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
        self, config: models.MachineConfiguration, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /machine-config``: set the whole machine configuration. Pre-boot only."""
        await self._call("putMachineConfiguration", config, timeout=timeout)

    async def patch_machine_config(
        self,
        update: models.MachineConfiguration | Mapping[str, Any],
        *,
        timeout: TimeoutArg = DEFAULT,
    ) -> None:
        """``PATCH /machine-config``: change some machine settings. Pre-boot only.

        ``update`` is a mapping of just the fields to change (each validated),
        e.g. ``{"vcpu_count": 2}``, or a whole :class:`~firec.models.MachineConfiguration`.
        """
        body: Any = update
        if not isinstance(update, models.MachineConfiguration):
            body = partial_body(models.MachineConfiguration, update)
        await self._call("patchMachineConfiguration", body, timeout=timeout)

    async def put_cpu_config(
        self, cpu_config: models.CpuConfig, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /cpu-config``: a custom CPU template (Firecracker 1.4+). Pre-boot only."""
        await self._call("putCpuConfiguration", cpu_config, timeout=timeout)

    # -- block devices -------------------------------------------------------

    async def put_drive(self, drive: models.Drive, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /drives/{drive_id}``: add or replace a block device. Pre-boot only."""
        await self._call("putGuestDriveByID", drive, timeout=timeout, drive_id=drive.drive_id)

    async def patch_drive(
        self, drive: models.PartialDrive, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /drives/{drive_id}``: swap a drive's backing file or rate limiter. Post-boot."""
        await self._call("patchGuestDriveByID", drive, timeout=timeout, drive_id=drive.drive_id)

    async def put_pmem(self, pmem: models.Pmem, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /pmem/{id}``: add a virtio-pmem device (Firecracker 1.14+). Pre-boot only."""
        await self._call("putGuestPmemByID", pmem, timeout=timeout, id=pmem.id)

    async def patch_pmem(self, pmem: models.PartialPmem, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PATCH /pmem/{id}``: update a pmem device (Firecracker 1.16+)."""
        await self._call("patchGuestPmemByID", pmem, timeout=timeout, id=pmem.id)

    # -- network -------------------------------------------------------------

    async def put_network_interface(
        self, iface: models.NetworkInterface, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /network-interfaces/{iface_id}``: add a virtio-net device. Pre-boot only."""
        await self._call(
            "putGuestNetworkInterfaceByID", iface, timeout=timeout, iface_id=iface.iface_id
        )

    async def patch_network_interface(
        self, iface: models.PartialNetworkInterface, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /network-interfaces/{iface_id}``: update rate limiters. Post-boot."""
        await self._call(
            "patchGuestNetworkInterfaceByID", iface, timeout=timeout, iface_id=iface.iface_id
        )

    # -- vsock, entropy, serial, memory hotplug ------------------------------

    async def put_vsock(self, vsock: models.Vsock, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /vsock``: the virtio-vsock device. Pre-boot only."""
        await self._call("putGuestVsock", vsock, timeout=timeout)

    async def put_entropy(
        self, entropy: models.EntropyDevice, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /entropy``: the virtio-rng device (Firecracker 1.4+). Pre-boot only."""
        await self._call("putEntropyDevice", entropy, timeout=timeout)

    async def put_serial(
        self, serial: models.SerialDevice, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /serial``: where the serial console goes (Firecracker 1.14+). Pre-boot only."""
        await self._call("putSerialDevice", serial, timeout=timeout)

    async def put_memory_hotplug(
        self, config: models.MemoryHotplugConfig, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /hotplug/memory``: the hotpluggable memory region (Firecracker 1.14+)."""
        await self._call("putMemoryHotplug", config, timeout=timeout)

    async def patch_memory_hotplug(
        self, update: models.MemoryHotplugSizeUpdate, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /hotplug/memory``: resize the plugged memory. Post-boot."""
        await self._call("patchMemoryHotplug", update, timeout=timeout)

    async def get_memory_hotplug(
        self, *, timeout: TimeoutArg = DEFAULT
    ) -> models.MemoryHotplugStatus:
        """``GET /hotplug/memory``: the hotplug region's size and plugged amount."""
        result: models.MemoryHotplugStatus = await self._call("getMemoryHotplug", timeout=timeout)
        return result

    # -- logger, metrics -----------------------------------------------------

    async def put_logger(self, logger: models.Logger, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /logger``: where and how Firecracker logs."""
        await self._call("putLogger", logger, timeout=timeout)

    async def put_metrics(self, metrics: models.Metrics, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /metrics``: where Firecracker writes its metrics."""
        await self._call("putMetrics", metrics, timeout=timeout)

    # -- MMDS ----------------------------------------------------------------

    async def put_mmds_config(
        self, config: models.MmdsConfig, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /mmds/config``: MMDS version, interfaces and address. Pre-boot only."""
        await self._call("putMmdsConfig", config, timeout=timeout)

    async def put_mmds(self, data: Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /mmds``: replace the whole MMDS data store with ``data``."""
        await self._call("putMmds", dict(data), timeout=timeout)

    async def patch_mmds(self, data: Mapping[str, Any], *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PATCH /mmds``: merge ``data`` into the MMDS data store (RFC 7396)."""
        await self._call("patchMmds", dict(data), timeout=timeout)

    async def get_mmds(self, *, timeout: TimeoutArg = DEFAULT) -> Any:
        """``GET /mmds``: the MMDS data store's contents."""
        return await self._call("getMmds", timeout=timeout)

    # -- balloon -------------------------------------------------------------

    async def put_balloon(self, balloon: models.Balloon, *, timeout: TimeoutArg = DEFAULT) -> None:
        """``PUT /balloon``: the balloon device. Pre-boot only."""
        await self._call("putBalloon", balloon, timeout=timeout)

    async def get_balloon(self, *, timeout: TimeoutArg = DEFAULT) -> models.Balloon:
        """``GET /balloon``: the balloon device's configuration."""
        result: models.Balloon = await self._call("describeBalloonConfig", timeout=timeout)
        return result

    async def patch_balloon(
        self, update: models.BalloonUpdate, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /balloon``: change the balloon's target size. Post-boot."""
        await self._call("patchBalloon", update, timeout=timeout)

    async def get_balloon_stats(self, *, timeout: TimeoutArg = DEFAULT) -> models.BalloonStats:
        """``GET /balloon/statistics``: the latest statistics the guest's driver reported."""
        result: models.BalloonStats = await self._call("describeBalloonStats", timeout=timeout)
        return result

    async def patch_balloon_stats(
        self, update: models.BalloonStatsUpdate, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /balloon/statistics``: change the statistics polling interval. Post-boot."""
        await self._call("patchBalloonStatsInterval", update, timeout=timeout)

    async def start_balloon_hinting(
        self, command: models.BalloonStartCmd | None = None, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PATCH /balloon/hinting/start``: start free page hinting (Firecracker 1.14+)."""
        await self._call("startBalloonHinting", command, timeout=timeout)

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
        self, params: models.SnapshotCreateParams, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /snapshot/create``: write the paused microVM's state and memory to files."""
        await self._call("createSnapshot", params, timeout=timeout)

    async def load_snapshot(
        self, params: models.SnapshotLoadParams, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """``PUT /snapshot/load``: restore a snapshot into this (unconfigured) VMM."""
        await self._call("loadSnapshot", params, timeout=timeout)
