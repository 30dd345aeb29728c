"""The guest kernel: :class:`BootSource`."""

from __future__ import annotations

from pydantic import Field

from firec.api.models.base import APIModel, HostPath, StrictStr

__all__ = ["BootSource"]


class BootSource(APIModel):
    """The guest kernel, its command line and initrd.

    Endpoint: ``PUT /boot-source`` (before boot).
    """

    kernel_image_path: HostPath = Field(
        description="Host level path to the kernel image used to boot the guest."
    )
    boot_args: StrictStr | None = Field(default=None, description="Kernel boot arguments.")
    initrd_path: HostPath | None = Field(
        default=None, description="Host level path to the initrd image used to boot the guest."
    )
