"""The microVM metadata service: :class:`MmdsConfig`, :class:`MmdsContentsObject`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from firec.api.models.base import (
    APIModel,
    DeviceId,
    EnumText,
    StrictBool,
    StrictStr,
    explained_pattern,
)

__all__ = ["MMDS_IPV4_PATTERN", "MmdsConfig", "MmdsContentsObject", "MmdsVersion"]

_BYTE_1_254 = r"([1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4])"
_BYTE_0_255 = r"([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"
MMDS_IPV4_PATTERN = explained_pattern(
    rf"^169\.254\.{_BYTE_1_254}\.{_BYTE_0_255}$",
    "must be a link-local IPv4 address 169.254.x.y (x from 1 to 254)",
)
"""The link-local addresses the MMDS may listen on (from the API specification)."""


class MmdsVersion(StrEnum):
    """MMDS protocol version (``MmdsConfig.version``); V2 uses session tokens."""

    V1 = "V1"
    V2 = "V2"


class MmdsConfig(APIModel):
    """Which interfaces reach the MMDS, its address and its version.

    Endpoint: ``PUT /mmds/config`` (before boot).
    """

    network_interfaces: list[DeviceId] = Field(
        description=(
            "Ids of the network interfaces that forward packets to the MMDS; they must exist "
            "when the request is made. ARP requests and TCP segments heading to ipv4_address "
            "on these interfaces are answered by the MMDS and do not reach the tap device."
        ),
    )
    version: Annotated[MmdsVersion, EnumText] | None = Field(
        default=None, description="MMDS version to configure (V1 by default)."
    )
    ipv4_address: StrictStr | None = Field(
        default=None,
        pattern=MMDS_IPV4_PATTERN,
        description="A valid IPv4 link-local address (169.254.169.254 by default).",
    )
    imds_compat: StrictBool | None = Field(
        default=None,
        description=(
            "Answer like EC2 IMDS, i.e. text/plain regardless of the Accept header "
            "(Firecracker 1.13+)."
        ),
    )


class MmdsContentsObject(APIModel):
    """The MMDS data store: any JSON object.

    Endpoints: ``PUT /mmds`` (replace), ``PATCH /mmds`` (JSON merge patch),
    ``GET /mmds``. Keys are free, so build it from a dict::

        MmdsContentsObject.from_api({"latest": {"meta-data": {"ami-id": "ami-1"}}})
    """

    model_config = ConfigDict(extra="allow")

    @property
    def contents(self) -> dict[str, Any]:
        """The stored JSON object."""
        return dict(self.model_extra or {})

    def to_api(self) -> dict[str, Any]:
        """Return the JSON object, ``null`` values included (they are data here)."""
        return self.model_dump(mode="json")
