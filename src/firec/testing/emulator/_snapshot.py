"""Snapshot files of the emulator: a state file and a (sparse) guest-memory file.

The state file starts with :data:`STATE_MAGIC`, then one JSON document: the
snapshot data format, the emulated release, the VM configuration and state. The
memory file has the configured memory size (sparse, so it costs no disk) and
starts with :data:`MEMORY_MAGIC` plus the id of its state file, so loading a
state with the wrong memory file is refused. Real Firecracker cannot read these
files, nor the emulator real ones: they are only meant for round trips.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from ._errors import os_error
from ._release import Release

if TYPE_CHECKING:
    from ._state import VmmState

__all__ = [
    "MEMORY_MAGIC",
    "STATE_MAGIC",
    "SnapshotFileError",
    "describe",
    "load",
    "restore",
    "save",
]

STATE_MAGIC = b"FIREC-EMULATOR-SNAPSHOT-STATE\n"
MEMORY_MAGIC = b"FIREC-EMULATOR-SNAPSHOT-MEMORY\n"
_SAVED = (
    "machine",
    "boot_source",
    "drives",
    "nets",
    "vsock",
    "balloon",
    "entropy",
    "pmem",
    "memory_hotplug",
    "mmds_data",
    "mmds_version",
    "mmds_ipv4",
    "mmds_imds_compat",
    "mmds_ifaces",
)


class SnapshotFileError(Exception):
    """A snapshot file could not be written or read; texts for modern and legacy releases."""

    def __init__(self, modern: str, legacy: str) -> None:
        super().__init__(modern)
        self.modern = modern
        self.legacy = legacy


def save(vmm: VmmState, state_path: str, mem_path: str, *, diff: bool) -> None:
    """Write the state file and the memory file of a paused VM."""
    snap_id = str(uuid.uuid4())
    doc = {
        "format": vmm.rel.snapshot_format,
        "firecracker": vmm.rel.version,
        "id": snap_id,
        "diff": diff,
        "vm": {name: getattr(vmm, name) for name in _SAVED},
    }
    try:
        fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise SnapshotFileError(
            f"Cannot perform open on the snapshot backing file: {os_error(exc)}",
            f"Cannot perform open on the snapshot backing file: {os_error(exc)}",
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(STATE_MAGIC + json.dumps(doc).encode())
    size = vmm.machine["mem_size_mib"] << 20
    try:
        fd = os.open(mem_path, os.O_WRONLY | os.O_CREAT | (0 if diff else os.O_TRUNC), 0o644)
    except OSError as exc:
        raise SnapshotFileError(
            f"Cannot save the memory file: Cannot open the memory file: {os_error(exc)}",
            f"Cannot perform open on the memory file: {os_error(exc)}",
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(MEMORY_MAGIC + snap_id.encode() + b"\n")
        f.truncate(size)


def _read_state(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SnapshotFileError(
            "Failed to get snapshot state from file: Failed to open snapshot file: "
            f"{os_error(exc)}",
            f"Cannot perform open on the snapshot backing file: {os_error(exc)}",
        ) from None
    if not data.startswith(STATE_MAGIC):
        raise SnapshotFileError(
            "Failed to get snapshot state from file: Failed to load snapshot state from file: "
            "An error occured during bincode decoding: LimitExceeded",
            "Cannot deserialize the microVM state: Crc64(0)",
        )
    try:
        doc: dict[str, Any] = json.loads(data[len(STATE_MAGIC) :])
    except ValueError:
        raise SnapshotFileError(
            "Failed to get snapshot state from file: Failed to load snapshot state from file: "
            "An error occured during bincode decoding: LimitExceeded",
            "Cannot deserialize the microVM state: Crc64(0)",
        ) from None
    return doc


def load(rel: Release, state_path: str, mem_path: str) -> dict[str, Any]:
    """Read and check a snapshot for ``rel``; raises SnapshotFileError."""
    doc = _read_state(state_path)
    if doc.get("format") != rel.snapshot_format:
        text = (
            "Failed to get snapshot state from file: Failed to load snapshot state from file: "
            f"Snapshot version mismatch: snapshot is v{doc.get('format')}, this Firecracker "
            f"reads v{rel.snapshot_format}"
        )
        raise SnapshotFileError(text, f"Cannot deserialize the microVM state: {text}")
    try:
        with open(mem_path, "rb") as f:
            head = f.read(len(MEMORY_MAGIC) + 37)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise SnapshotFileError(
            f"Failed to load guest memory: Cannot open the memory file: {os_error(exc)}",
            f"Cannot deserialize the microVM state: Cannot open the memory file: {os_error(exc)}",
        ) from None
    expected = MEMORY_MAGIC + str(doc.get("id")).encode() + b"\n"
    mem_mib = int(doc["vm"]["machine"]["mem_size_mib"])
    if head != expected or size < mem_mib << 20:
        text = "Failed to load guest memory: the memory file does not belong to this snapshot"
        raise SnapshotFileError(text, f"Cannot deserialize the microVM state: {text}")
    return doc


def restore(vmm: VmmState, doc: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Apply a loaded snapshot to a fresh VMM: configuration, then state Paused."""
    for name in _SAVED:
        if name in doc["vm"]:
            setattr(vmm, name, doc["vm"][name])
    overrides = {o["iface_id"]: o["host_dev_name"] for o in cfg.get("network_overrides") or []}
    for net in vmm.nets:
        if net["iface_id"] in overrides:
            net["host_dev_name"] = overrides[net["iface_id"]]
    if cfg.get("vsock_override") and vmm.vsock is not None:
        vmm.vsock["uds_path"] = cfg["vsock_override"]["uds_path"]
    if cfg.get("track_dirty_pages") or cfg.get("enable_diff_snapshots"):
        vmm.machine["track_dirty_pages"] = True
    vmm.state = "Paused"


def describe(path: str) -> str:
    """The data format version of a state file, as ``--describe-snapshot`` prints it."""
    doc = _read_state(path)
    return f"v{doc['format']}"
