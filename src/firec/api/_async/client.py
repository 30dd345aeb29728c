"""The low-level asyncio client: one coroutine per Firecracker API operation.

Example (against firec's emulator; the same works against a real Firecracker)::

    import asyncio, firec
    from firec.api.models import BootSource, MachineConfiguration
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

import asyncio
import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from firec._proc import VmmThreadWatch, socket_peer_pid
from firec.api import models
from firec.api._request import (
    API_THREAD_PATHS,
    DEFAULT,
    LEAVES_PREBOOT,
    SETTLE_BLIND,
    SETTLE_LIMIT,
    SETTLE_POLL,
    TimeoutArg,
    as_model,
    build_request,
    check_max_payload,
    check_request,
    check_socket_path,
    check_timeout,
    check_version_arg,
    decode,
    encode_body,
    json_object,
    loses_requests,
    needs_version,
    partial_body,
    shortcut_model,
)
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, OPERATIONS_BY_ID, Operation
from firec.api.transport import RequestWatch, async_unix_transport, transport_error
from firec.api.versions import Version, check_supported
from firec.errors import APIError, ConnectError, ValidationError

__all__ = ["AsyncClient"]

#: Seconds a call may take before :class:`firec.errors.TimeoutError`.
DEFAULT_TIMEOUT = 10.0
#: Seconds a snapshot create/load may take.
DEFAULT_SLOW_TIMEOUT = 300.0
#: Operations whose answer tells the version: sent without asking it first.
_TELLS_VERSION = frozenset({"describeInstance", "getFirecrackerVersion"})


class AsyncClient:
    """Talks to one Firecracker over its API socket, asynchronously.

    Args:
        socket_path: the VMM's ``--api-sock``.
        timeout: seconds any call may take (``None``: no limit); each method also
            takes ``timeout=`` for that call alone.
        slow_timeout: seconds a snapshot create or load may take.
        version: the Firecracker version, when known; otherwise it is asked once
            (``GET /version``) before the first call (unless that call is
            ``GET /``, whose answer tells it) and cached. A Firecracker older
            than 1.0 is refused (:class:`firec.errors.UnsupportedError`).
        check_version: refuse, before sending, endpoints, fields and values that
            the connected version lacks (:class:`firec.errors.UnsupportedError`).
        transport: an httpx transport to use instead of the Unix socket.
        max_payload_size: the largest request body, in bytes, the VMM takes: its
            ``--http-api-max-payload-size``, Firecracker's default 51200 unless
            given (a :class:`~firec.Machine` tells its client). A larger body is
            refused before sending (:class:`firec.errors.ValidationError` naming
            the size, the limit and the flag); ``None`` sends any size.

    Each method takes its request body as a model (``models.Drive(...)``) or a
    mapping of the model's fields (``{"drive_id": "rootfs", ...}``), validated
    the same way; a few also take a shortcut (``create_action("InstanceStart")``,
    ``patch_vm("Paused")``).

    Connections are kept alive and reused. On Firecracker releases that can
    lose a request sent right after another's answer (1.0 to 1.2.0, 1.3.0 and
    1.3.1: the whole API then hangs), requests to a booted VM go one at a time,
    each once Firecracker's VMM thread is done with the previous one.

    Errors: :class:`firec.errors.APIError`
    when Firecracker refuses (with its ``fault_message``),
    :class:`firec.errors.ConnectError` / :class:`firec.errors.TimeoutError` naming
    the socket, :class:`firec.errors.ValidationError` for bad values (naming the
    field, before anything is sent).
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
        max_payload_size: int | None = DEFAULT_MAX_PAYLOAD_SIZE,
    ) -> None:
        self.socket_path = check_socket_path(socket_path)
        self.max_payload_size = check_max_payload(max_payload_size)
        check_timeout(timeout)
        check_timeout(slow_timeout, "slow_timeout")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ValidationError(
                "transport", f"must be an httpx.AsyncBaseTransport, not {type(transport).__name__}"
            )
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self.check_version = check_version
        #: The VMM's pid, when known (a Machine sets it); otherwise found from the
        #: socket when needed (only for releases that can lose requests).
        self.vmm_pid: int | None = None
        self._version: Version | None = None
        self._loses_requests = False
        self._preboot = False  # seen "Not started", and not started since
        self._watch: VmmThreadWatch | None = None
        self._watched = False
        self._one_at_a_time = asyncio.Lock()
        given = check_version_arg(version)
        if given is not None:
            self._learn(given)
        self._transport = transport or async_unix_transport(self.socket_path)
        self._closed = False
        self._urls: dict[str, httpx.URL] = {}

    def _learn(self, version: Version) -> None:
        """Remember the connected version (refusing one before 1.0)."""
        check_supported(version)
        self._version = version
        self._loses_requests = loses_requests(version)

    def give_up_when(self, watch: RequestWatch | None) -> None:
        """Have every request ask ``watch`` whether its answer will ever come.

        While an answer is awaited, ``watch.check()`` is called every
        ``watch.interval`` seconds; when it gives a reason, the request fails
        at once with :class:`~firec.errors.ConnectError` saying it, instead
        of waiting for its timeout. :class:`firec.Machine` sets its VMM's
        :class:`~firec.vm.process.ExitWatch` here: a request then ends as soon as
        the VMM exits, and never keeps a stopping Firecracker from exiting.
        Only firec's own Unix socket transports take a watch; ``None`` removes it.
        """
        if hasattr(self._transport, "watch"):
            self._transport.watch = watch

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if not self._closed:
            self._closed = True
            if self._watch is not None:
                self._watch.close()
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
        """The connected Firecracker's version, asked once and cached.

        Raises:
            firec.errors.UnsupportedError: it is older than 1.0, which firec
                does not support (those answer ``GET /version`` with 400).
        """
        if self._version is None:
            try:
                answer = await self.get_version()
            except APIError as exc:
                if exc.status_code != 400:
                    raise
                # Before 1.0 there was no GET /version; GET / names the version
                # (and get_instance_info refuses one before 1.0).
                await self.get_instance_info()
                if self._version is None:  # pragma: no cover - get_instance_info sets it
                    raise
            self._learn(Version.parse(answer.firecracker_version))
        assert self._version is not None
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
            raise ConnectError(
                f"{self!r} is closed: make a new client", socket_path=self.socket_path
            )
        op: Operation = OPERATIONS_BY_ID[operation_id]
        check_timeout(timeout)
        data = encode_body(body)
        if self.check_version:
            version = self._version
            if version is None and operation_id not in _TELLS_VERSION:
                version = await self.firecracker_version()
            if version is not None and needs_version(op, data):
                check_request(op, data, version)
        if timeout is DEFAULT:
            timeout = self.slow_timeout if op.slow else self.timeout
        request = build_request(
            op.method,
            op.url(**params) if params else op.path,
            data,
            timeout,
            self._urls,
            self.max_payload_size,
        )
        if not self._loses_requests or op.path in API_THREAD_PATHS:
            return decode(op, await self._exchange(request))
        # A release that can lose a request sent right after another one's answer
        # (see loses_requests): one at a time, once its VMM thread sleeps again.
        async with self._one_at_a_time:
            if not self._preboot:
                await self._vmm_thread_settled()
            if operation_id in LEAVES_PREBOOT:
                self._preboot = False
            return decode(op, await self._exchange(request))

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
            await response.aread()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.socket_path) from exc
        return response

    def _vmm_thread(self) -> VmmThreadWatch | None:
        """The watch on the VMM thread: of :attr:`vmm_pid`, or of the socket's server."""
        pid, watch = self.vmm_pid, self._watch
        if watch is not None and (pid is None or watch.pid == pid):
            return watch
        if pid is None:
            if self._watched:
                return None  # the socket did not tell
            self._watched = True
            pid = socket_peer_pid(self.socket_path)
            if pid is None:
                return None
        if watch is not None:
            watch.close()
        try:
            self._watch = VmmThreadWatch(pid)
        except OSError:  # gone, or not ours to look at
            self._watch = None
        return self._watch

    async def _vmm_thread_settled(self) -> None:
        """Wait until the VMM thread is asleep: done with the answer it last sent."""
        watch = self._vmm_thread()
        deadline = 0.0
        while True:
            asleep = watch.asleep() if watch is not None else None
            if asleep is None:  # cannot see it: give it time instead
                await asyncio.sleep(SETTLE_BLIND)
                return
            if asleep:
                return
            now = time.monotonic()
            if not deadline:
                deadline = now + SETTLE_LIMIT
            elif now > deadline:
                return  # busy all along: its answer is long done
            await asyncio.sleep(SETTLE_POLL)

    # -- instance ------------------------------------------------------------

    async def get_instance_info(self, *, timeout: TimeoutArg = DEFAULT) -> models.InstanceInfo:
        """``GET /``: the instance's id, state and VMM version (remembered for checks)."""
        result: models.InstanceInfo = await self._call("describeInstance", timeout=timeout)
        if self._version is None:
            self._learn(Version.parse(result.vmm_version))  # refuses one before 1.0
        self._preboot = result.state is models.InstanceState.NOT_STARTED
        return result

    async def get_version(self, *, timeout: TimeoutArg = DEFAULT) -> models.FirecrackerVersion:
        """``GET /version``: the Firecracker version."""
        result: models.FirecrackerVersion = await self._call(
            "getFirecrackerVersion", timeout=timeout
        )
        return result

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
