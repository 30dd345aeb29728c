"""Snapshots: creating (:class:`SnapshotCreateParams`) and loading (:class:`SnapshotLoadParams`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from firec.api.models.base import APIModel, DeviceId, EnumText, HostPath, StrictBool, StrictStr
from firec.errors import ValidationError

__all__ = [
    "MemoryBackend",
    "MemoryBackendType",
    "NetworkOverride",
    "SnapshotCreateParams",
    "SnapshotLoadParams",
    "SnapshotType",
    "VsockOverride",
]


class SnapshotType(StrEnum):
    """Kind of snapshot (``SnapshotCreateParams.snapshot_type``)."""

    FULL = "Full"
    DIFF = "Diff"


class MemoryBackendType(StrEnum):
    """Where the guest memory of a loaded snapshot comes from (``MemoryBackend.backend_type``)."""

    FILE = "File"
    UFFD = "Uffd"


class MemoryBackend(APIModel):
    """The backend serving guest memory when a snapshot is loaded (Firecracker 1.1+).

    Part of :class:`SnapshotLoadParams` (``PUT /snapshot/load``).
    """

    backend_type: Annotated[MemoryBackendType, EnumText] = Field(description="File or Uffd.")
    backend_path: HostPath = Field(
        description=(
            "File: path to the file that contains the guest memory to be loaded. Uffd: path to "
            "the Unix socket where a process listens for a UFFD initialization payload and file "
            "descriptor, to serve this process's guest memory page faults."
        ),
    )


class SnapshotCreateParams(APIModel):
    """Where to write a snapshot, and which kind.

    Endpoint: ``PUT /snapshot/create`` (VM paused).
    """

    snapshot_path: HostPath = Field(
        description="Path to the file that will contain the microVM state."
    )
    mem_file_path: HostPath = Field(
        description="Path to the file that will contain the guest memory."
    )
    snapshot_type: Annotated[SnapshotType, EnumText] | None = Field(
        default=None,
        description="Type of snapshot to create; by default a full snapshot is created.",
    )
    version: StrictStr | None = Field(
        default=None,
        description=(
            "Deprecated, removed in Firecracker 1.6: the microVM version for which to create "
            "the snapshot (defaults to the current version)."
        ),
    )


class NetworkOverride(APIModel):
    """A new backing tap device for a network interface, on snapshot load.

    Part of :class:`SnapshotLoadParams` (``PUT /snapshot/load``, Firecracker 1.12+).
    """

    iface_id: DeviceId = Field(description="The name of the interface to modify.")
    host_dev_name: StrictStr = Field(
        min_length=1, description="The new host device of the interface."
    )


class VsockOverride(APIModel):
    """A new backing Unix socket for the vsock device, on snapshot load.

    Part of :class:`SnapshotLoadParams` (``PUT /snapshot/load``, Firecracker 1.16+).
    """

    uds_path: HostPath = Field(description="The new path for the backing Unix Domain Socket.")


class SnapshotLoadParams(APIModel):
    """Which snapshot to load, where its memory comes from, and what to change.

    Endpoint: ``PUT /snapshot/load`` (before any configuration). Exactly one of
    ``mem_backend`` (Firecracker 1.1+) and the deprecated ``mem_file_path``
    must be set.
    """

    snapshot_path: HostPath = Field(
        description="Path to the file that contains the microVM state to be loaded."
    )
    mem_backend: MemoryBackend | None = Field(
        default=None,
        description="The backend that serves the guest memory (Firecracker 1.1+).",
    )
    mem_file_path: HostPath | None = Field(
        default=None,
        description=(
            "Deprecated (use mem_backend): path to the file that contains the guest memory to "
            "be loaded. Required by Firecracker 1.0."
        ),
    )
    track_dirty_pages: StrictBool | None = Field(
        default=None,
        description=(
            "Enable dirty page tracking to improve space efficiency of diff snapshots "
            "(Firecracker 1.13+)."
        ),
    )
    enable_diff_snapshots: StrictBool | None = Field(
        default=None,
        description="Deprecated (use track_dirty_pages from 1.13): enable dirty page tracking.",
    )
    resume_vm: StrictBool | None = Field(
        default=None,
        description="When true, the VM is also resumed if the snapshot load is successful.",
    )
    network_overrides: list[NetworkOverride] | None = Field(
        default=None, description="Network host device names to override (Firecracker 1.12+)."
    )
    vsock_override: VsockOverride | None = Field(
        default=None,
        description="Overrides the vsock device's Unix socket path (Firecracker 1.16+).",
    )
    clock_realtime: StrictBool | None = Field(
        default=None,
        description=(
            "[x86_64 only] Pass KVM_CLOCK_REALTIME to KVM_SET_CLOCK on restore, advancing "
            "kvmclock by the wall-clock time elapsed since the snapshot was taken "
            "(Firecracker 1.14+)."
        ),
    )

    @model_validator(mode="after")
    def _one_memory_source(self) -> Self:
        if (self.mem_backend is None) == (self.mem_file_path is None):
            raise ValidationError(
                "mem_backend", "exactly one of mem_backend and mem_file_path must be set"
            )
        return self
