"""A running microVM's devices: vsock connections both ways, drive swaps, metrics on demand.

The layer of :class:`firec.AsyncMachine` (see :mod:`firec.vm._async.machine`)
for what a booted VM's devices do, on the VMM process of
:mod:`firec.vm._async.vmm`. The rest (balloon, network rate limiters, MMDS,
memory hotplug) is one call of the machine's ``client`` away.
"""

# This file is the one source of both flavours: devices.py (under the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import os
import time
from pathlib import Path

from firec.api import models
from firec.errors import ConfigError, MachineError
from firec.vm import vsock
from firec.vm._async import io
from firec.vm._async.vmm import MachineVmm
from firec.vm.metrics import MetricsSnapshot

__all__ = ["MachineDevices"]


class MachineDevices(MachineVmm):
    """A booted microVM's devices: the device layer of :class:`firec.AsyncMachine`."""

    @property
    def metrics(self) -> MetricsSnapshot | None:
        """The latest metrics Firecracker wrote, when a metrics path or fifo is set."""
        return self._metrics.latest if self._metrics is not None else None

    async def flush_metrics(self, timeout: float = 5.0) -> MetricsSnapshot:
        """Ask Firecracker to write its metrics now (FlushMetrics) and return them."""
        if self._metrics is None:
            raise MachineError(
                f"microVM {self.vm_id} has no metrics path: set metrics_path or metrics_fifo"
            )
        seen = self._metrics.snapshots_seen
        await self.client.create_action(models.ActionType.FLUSH_METRICS)
        deadline = time.monotonic() + timeout
        while self._metrics.snapshots_seen == seen:
            if time.monotonic() > deadline:
                raise MachineError(f"microVM {self.vm_id}: no metrics arrived within {timeout:g}s")
            await io.sleep(0.005)
        latest = self._metrics.latest
        assert latest is not None
        return latest

    # -- devices ---------------------------------------------------------------------
    #
    # Everything else a device can do after boot is one client call away, e.g.
    # machine.client.patch_balloon(models.BalloonUpdate(amount_mib=64)),
    # machine.client.patch_network_interface(models.PartialNetworkInterface(...)),
    # machine.client.put_mmds({...}) / patch_mmds / get_mmds,
    # machine.client.patch_memory_hotplug(models.MemoryHotplugSizeUpdate(...)).

    @property
    def vsock_path(self) -> Path | None:
        """The vsock device's Unix socket on the host (inside the jail when jailed), if any."""
        return self._launch.vsock_path

    def _require_vsock(self) -> Path:
        path = self._launch.vsock_path
        if path is None:
            raise MachineError(
                f"microVM {self.vm_id} has no vsock device: give the config one "
                "(Config.vsock, or Builder.vsock(guest_cid, uds_path))"
            )
        return path

    async def vsock_connect(
        self, port: int, *, timeout: float | None = vsock.DEFAULT_TIMEOUT
    ) -> io.VsockConnection:
        """Connect to vsock ``port`` in the guest (Firecracker's ``CONNECT``/``OK`` handshake).

        Returns what :func:`firec.vm.vsock.connect` returns (a socket); the async
        machine returns a ``(reader, writer)`` pair as
        :func:`firec.vm.vsock.open_connection` does. Raises
        :class:`~firec.errors.ConnectError` / :class:`~firec.errors.TimeoutError`
        saying ``nothing listens on vsock port N in the guest`` when the guest
        does not accept the connection within ``timeout`` seconds.
        """
        return await io.vsock_connect(self._require_vsock(), port, timeout)

    async def vsock_listen(self, port: int) -> io.VsockListener:
        """Listen for guest connections to host vsock ``port`` (CID 2).

        The socket is made at ``<uds_path>_<port>`` on the host side of the
        jail, owned by the jail's user. Take connections with
        ``accept_within(timeout)``; :meth:`delete` closes the listener and
        removes its socket file if it is still open.
        """
        owner = self._launch.layout.owner
        listener = await io.vsock_listen(self._require_vsock(), port, owner)
        self._vsock_listeners.append(listener)
        return listener

    async def update_drive(
        self,
        drive_id: str,
        *,
        path: str | os.PathLike[str] | None = None,
        rate_limiter: models.RateLimiter | None = None,
    ) -> None:
        """Swap a running VM's drive to another backing file, or change its rate limiter.

        ``path`` is a host path; a jailed VM gets the file brought into its
        jail first, by :meth:`~firec.vm.layout.Layout.bring_in` (which never changes
        the file: a writable drive the jail's user may not write as it is is
        refused with a :class:`~firec.errors.ConfigError`). A ``rate_limiter``
        replaces the buckets it gives and keeps the others; a bucket of size 0 turns that limit off.
        ``PATCH /drives/{drive_id}``: Firecracker's refusal (unknown drive, not
        booted yet) is an :class:`~firec.errors.APIError`.
        """
        seen: str | None = None
        if path is not None:
            if not Path(path).is_file() and not Path(path).is_block_device():
                raise ConfigError(f"drives.{drive_id}.path_on_host", f"{path} is not a file")
            known = {d.drive_id: d for d in self.config.drives}
            writable = drive_id not in known or not known[drive_id].is_read_only
            seen = await io.run_blocking(
                self._launch.layout.bring_in,
                path,
                writable=writable,
                field=f"drives.{drive_id}.path_on_host",
            )
        await self.client.patch_drive(
            models.PartialDrive(drive_id=drive_id, path_on_host=seen, rate_limiter=rate_limiter)
        )
