"""Other devices: entropy, serial console, virtio-pmem and hotpluggable memory."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, DeviceId, HostPath, ResponseModel, StrictBool, UInt
from firec.api.models.ratelimit import RateLimiter, TokenBucket

__all__ = [
    "EntropyDevice",
    "MemoryHotplugConfig",
    "MemoryHotplugSizeUpdate",
    "MemoryHotplugStatus",
    "PartialPmem",
    "Pmem",
    "SerialDevice",
]


class EntropyDevice(APIModel):
    """A virtio-rng entropy device.

    Endpoint: ``PUT /entropy`` (before boot, Firecracker 1.4+).
    """

    rate_limiter: RateLimiter | None = Field(default=None, description="Rate limiter.")


class SerialDevice(APIModel):
    """Where the guest's serial console output goes.

    Endpoint: ``PUT /serial`` (before boot, Firecracker 1.14+).
    """

    serial_out_path: HostPath | None = Field(
        default=None,
        description=(
            "Path to a file or named pipe on the host to which serial output should be written."
        ),
    )
    rate_limiter: TokenBucket | None = Field(
        default=None,
        description=(
            "Token bucket limiting serial output bandwidth (Firecracker 1.16+); guest writes "
            "over the rate are dropped and counted in uart.rate_limiter_dropped_bytes."
        ),
    )


class Pmem(APIModel):
    """A virtio-pmem device backed by a host file.

    Endpoint: ``PUT /pmem/{id}`` (before boot, Firecracker 1.14+).
    """

    id: DeviceId = Field(description="Identifier of this device (also in the URL).")
    path_on_host: HostPath = Field(
        description="Host level path for the virtio-pmem device to use as a backing file."
    )
    root_device: StrictBool | None = Field(
        default=None,
        description=(
            "Make this device the root device for VM boot; fails if another device is "
            "already the root device."
        ),
    )
    read_only: StrictBool | None = Field(
        default=None, description="Map the backing file in read-only mode."
    )
    rate_limiter: RateLimiter | None = Field(
        default=None, description="Rate limiter (Firecracker 1.16+)."
    )


class PartialPmem(APIModel):
    """An update of a pmem device's rate limiter after boot.

    Endpoint: ``PATCH /pmem/{id}`` (Firecracker 1.16+).
    """

    id: DeviceId = Field(description="Identifier of the device (also in the URL).")
    rate_limiter: RateLimiter | None = Field(default=None, description="New rate limiter.")


class MemoryHotplugConfig(APIModel):
    """The hotpluggable memory device (virtio-mem).

    Endpoint: ``PUT /hotplug/memory`` (before boot, Firecracker 1.14+).
    ``total_size_mib`` is required: Firecracker refuses a body without it
    ("missing field `total_size_mib`"), though its API specification does not
    mark it required.
    """

    total_size_mib: UInt = Field(description="Total size of the hotpluggable memory in MiB.")
    slot_size_mib: UInt | None = Field(
        default=None,
        ge=128,
        description=(
            "Slot size for the hotpluggable memory in MiB (default 128): the granularity of "
            "hot-plug memory from the host."
        ),
    )
    block_size_mib: UInt | None = Field(
        default=None,
        ge=2,
        description=(
            "(Logical) block size for the hotpluggable memory in MiB (default 2): the logical "
            "granularity of hot-plug memory for the guest."
        ),
    )


class MemoryHotplugSizeUpdate(APIModel):
    """A new requested size of the hotpluggable memory.

    Endpoint: ``PATCH /hotplug/memory`` (after boot, Firecracker 1.14+).
    ``requested_size_mib`` is required: Firecracker refuses a body without it,
    though its API specification does not mark it required.
    """

    requested_size_mib: UInt = Field(description="New target region size, in MiB.")


class MemoryHotplugStatus(ResponseModel):
    """The state of the hotpluggable memory device.

    Endpoint: ``GET /hotplug/memory`` (Firecracker 1.14+).
    """

    total_size_mib: int | None = Field(
        default=None, description="Total size of the hotpluggable memory in MiB."
    )
    slot_size_mib: int | None = Field(
        default=None, description="Slot size for the hotpluggable memory in MiB."
    )
    block_size_mib: int | None = Field(
        default=None, description="(Logical) block size for the hotpluggable memory in MiB."
    )
    plugged_size_mib: int | None = Field(
        default=None, description="Plugged size for the hotpluggable memory in MiB."
    )
    requested_size_mib: int | None = Field(
        default=None, description="Requested size for the hotpluggable memory in MiB."
    )
