"""The emulator's ``Uffd`` memory backend: the Firecracker side of the page-fault protocol.

Like Firecracker, on a load with ``mem_backend.backend_type == "Uffd"`` the
emulator maps anonymous "guest memory" of the snapshot's size, registers it
with a new userfaultfd, connects to ``backend_path`` and sends the region
list (JSON) with the userfaultfd attached. It then reads the first bytes of
guest memory, which makes the kernel ask the handler for page 0: the load
succeeds only if the handler served the snapshot's own memory file (its
header names the state file). The mapping and the userfaultfd live as long as
the emulator.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from firec.snapshots.uffd import (
    GuestRegion,
    UffdError,
    map_anonymous,
    open_userfaultfd,
    register,
    send_handshake,
)

from ._errors import os_error
from ._jail import host_path
from ._release import Release
from ._snapshot import MEMORY_MAGIC, SnapshotFileError, _read_state

__all__ = ["load"]

#: Seconds the handler gets to serve the first page before the load fails.
SERVE_TIMEOUT = 10.0
_KEPT: list[Any] = []  # the guest memory of this process: never released


def _fail(text: str) -> SnapshotFileError:
    return SnapshotFileError(
        f"Failed to load guest memory: {text}",
        f"Cannot deserialize the microVM state: {text}",
    )


def load(rel: Release, state_path: str, socket_path: str) -> dict[str, Any]:
    """Read the state file, hand guest memory to the handler at ``socket_path``, check it."""
    doc = _read_state(state_path)
    if doc.get("format") != rel.snapshot_format:
        raise _fail(
            f"Snapshot version mismatch: snapshot is v{doc.get('format')}, this Firecracker "
            f"reads v{rel.snapshot_format}"
        )
    size = int(doc["vm"]["machine"]["mem_size_mib"]) << 20
    try:
        uffd = open_userfaultfd(device=host_path("/dev/userfaultfd"))  # the jail's, if jailed
        address = map_anonymous(size)
        register(uffd, address, size)
    except (UffdError, OSError) as exc:
        raise _fail(f"Error creating guest memory from uffd: {exc}") from None
    try:
        conn = send_handshake(socket_path, [GuestRegion(address, size, 0)], uffd)
    except OSError as exc:
        raise _fail(
            f"Error creating guest memory from uffd: Failed to connect to UDS Unix stream: "
            f"{os_error(exc)}"
        ) from None
    _KEPT.append((uffd, address, size, conn))
    expected = MEMORY_MAGIC + str(doc.get("id")).encode() + b"\n"
    head: list[bytes] = []

    def touch() -> None:
        buffer = ctypes.create_string_buffer(len(expected))
        ctypes.memmove(buffer, address, len(expected))  # releases the GIL while it faults
        head.append(buffer.raw)

    reader = threading.Thread(target=touch, daemon=True)
    reader.start()  # blocks in the page fault until the handler answers
    reader.join(SERVE_TIMEOUT)
    if not head:
        raise _fail(f"the page fault handler at {socket_path} served no page in {SERVE_TIMEOUT}s")
    if head[0] != expected:
        raise _fail("the page fault handler served memory that does not belong to this snapshot")
    return doc
