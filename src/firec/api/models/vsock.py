"""The vsock device: :class:`Vsock`."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, HostPath, StrictInt, StrictStr

__all__ = ["Vsock"]


class Vsock(APIModel):
    """A virtio-vsock device, backed on the host by Unix domain sockets.

    Endpoint: ``PUT /vsock`` (before boot). Host-initiated connections go
    through ``uds_path`` (send ``CONNECT <port>\\n``); guest-initiated ones
    reach sockets listening at ``<uds_path>_<port>``.
    """

    guest_cid: StrictInt = Field(ge=3, le=2**32 - 1, description="Guest vsock CID.")
    uds_path: HostPath = Field(
        description="Path to UNIX domain socket, used to proxy vsock connections."
    )
    vsock_id: StrictStr | None = Field(
        default=None,
        description="Deprecated since Firecracker 1.0 (ignored); will be removed.",
    )
