"""Network interfaces: :class:`NetworkInterface`, :class:`PartialNetworkInterface`."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, DeviceId, StrictInt, StrictStr, explained_pattern
from firec.api.models.ratelimit import RateLimiter

__all__ = ["MAC_PATTERN", "NetworkInterface", "PartialNetworkInterface"]

MAC_PATTERN = explained_pattern(
    r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", "must be a MAC address such as 06:00:AC:10:00:02"
)
"""What Firecracker accepts as ``guest_mac``: six colon-separated hex bytes."""


class NetworkInterface(APIModel):
    """A virtio-net device backed by a host tap device.

    Endpoint: ``PUT /network-interfaces/{iface_id}`` (before boot).
    """

    iface_id: DeviceId = Field(description="Id of the interface (also in the URL).")
    host_dev_name: StrictStr = Field(
        min_length=1, description="Host level name of the tap device backing the interface."
    )
    guest_mac: StrictStr | None = Field(
        default=None,
        pattern=MAC_PATTERN,
        description="MAC address of the guest side, e.g. 06:00:AC:10:00:02.",
    )
    mtu: StrictInt | None = Field(
        default=None,
        ge=68,
        le=65535,
        description=(
            "MTU to advertise to the guest via VIRTIO_NET_F_MTU (Firecracker 1.16+). When set, "
            "a compatible guest driver will configure the interface with this MTU. When absent, "
            "VIRTIO_NET_F_MTU is not advertised and the guest uses its default MTU."
        ),
    )
    rx_rate_limiter: RateLimiter | None = Field(
        default=None, description="Rate limiter for received packets."
    )
    tx_rate_limiter: RateLimiter | None = Field(
        default=None, description="Rate limiter for transmitted packets."
    )


class PartialNetworkInterface(APIModel):
    """An update of an interface's rate limiters after boot.

    Endpoint: ``PATCH /network-interfaces/{iface_id}``.
    """

    iface_id: DeviceId = Field(description="Id of the interface (also in the URL).")
    rx_rate_limiter: RateLimiter | None = Field(
        default=None, description="New rate limiter for received packets."
    )
    tx_rate_limiter: RateLimiter | None = Field(
        default=None, description="New rate limiter for transmitted packets."
    )
