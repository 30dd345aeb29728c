"""Block devices: :class:`Drive`, :class:`PartialDrive` and their enums."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from firec.api.models.base import APIModel, DeviceId, EnumText, HostPath, StrictBool, StrictStr
from firec.api.models.ratelimit import RateLimiter

__all__ = ["CacheType", "Drive", "IoEngine", "PartialDrive"]


class CacheType(StrEnum):
    """Caching strategy of a block device (``Drive.cache_type``)."""

    UNSAFE = "Unsafe"
    WRITEBACK = "Writeback"


class IoEngine(StrEnum):
    """IO engine of a virtio-block device (``Drive.io_engine``)."""

    SYNC = "Sync"
    ASYNC = "Async"


class Drive(APIModel):
    """A block device: virtio-block (``path_on_host``) or vhost-user-block (``socket``).

    Endpoint: ``PUT /drives/{drive_id}`` (before boot). Firecracker before 1.6
    requires ``path_on_host`` and ``is_read_only``.
    """

    drive_id: DeviceId = Field(description="Id of the drive (also in the URL).")
    is_root_device: StrictBool = Field(description="Whether the guest boots from this drive.")
    partuuid: StrictStr | None = Field(
        default=None,
        description=(
            "Represents the unique id of the boot partition of this device. It is optional and "
            "it will be taken into account only if the is_root_device field is true."
        ),
    )
    cache_type: Annotated[CacheType, EnumText] | None = Field(
        default=None, description="Represents the caching strategy for the block device."
    )
    is_read_only: StrictBool | None = Field(
        default=None,
        description=(
            "Is block read only. Required for virtio-block (and by Firecracker before 1.6); "
            "omit it for vhost-user-block."
        ),
    )
    path_on_host: HostPath | None = Field(
        default=None,
        description=(
            "Host level path for the guest drive. Required for virtio-block (and by "
            "Firecracker before 1.6); omit it for vhost-user-block."
        ),
    )
    rate_limiter: RateLimiter | None = Field(
        default=None, description="Rate limiter (virtio-block only)."
    )
    io_engine: Annotated[IoEngine, EnumText] | None = Field(
        default=None,
        description=(
            'Type of the IO engine used by the device. "Async" is supported on host kernels '
            "newer than 5.10.51. Omit it for vhost-user-block."
        ),
    )
    socket: HostPath | None = Field(
        default=None,
        description=(
            "Path to the socket of vhost-user-block backend (Firecracker 1.6+). Required for "
            "vhost-user-block; omit it for virtio-block."
        ),
    )


class PartialDrive(APIModel):
    """An update of a drive's backing file or rate limiter after boot.

    Endpoint: ``PATCH /drives/{drive_id}``.
    """

    drive_id: DeviceId = Field(description="Id of the drive (also in the URL).")
    path_on_host: HostPath | None = Field(
        default=None,
        description=(
            "Host level path for the guest drive. Optional for virtio-block; omit it for "
            "vhost-user-block."
        ),
    )
    rate_limiter: RateLimiter | None = Field(default=None, description="New rate limiter.")
