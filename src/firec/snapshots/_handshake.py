"""The handshake between Firecracker and a page-fault handler: guest regions and a userfaultfd.

Firecracker connects to the handler's Unix socket and sends one message: a
JSON list of its guest memory regions (:class:`GuestRegion`), with the
userfaultfd attached (``SCM_RIGHTS``). :func:`receive_handshake` is the
handler's side; :func:`send_handshake` is Firecracker's (firec's emulator
uses it).

Example::

    >>> GuestRegion.from_json({"base_host_virt_addr": 4096, "size": 8192, "offset": 0})
    GuestRegion(base_host_virt_addr=4096, size=8192, offset=0, page_size=4096)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from firec.snapshots._userfaultfd import UffdError

__all__ = ["GuestRegion", "peer_pid", "receive_handshake", "send_handshake"]


@dataclass(frozen=True)
class GuestRegion:
    """One guest memory region as Firecracker describes it in the handshake.

    Attributes:
        base_host_virt_addr: where the region is mapped in Firecracker.
        size: its length in bytes.
        offset: where its contents start in the memory file.
        page_size: its page size in bytes (4096, or 2 MiB with huge pages).
    """

    base_host_virt_addr: int
    size: int
    offset: int
    page_size: int = 4096

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GuestRegion:
        """Read one entry of the handshake (any Firecracker from 1.1 on)."""
        # 1.1 sends no page size; later ones page_size_kib, which is in bytes
        # despite its name; 1.14 adds page_size.
        page = data.get("page_size") or data.get("page_size_kib") or 4096
        return cls(
            int(data["base_host_virt_addr"]), int(data["size"]), int(data["offset"]), int(page)
        )

    def to_json(self) -> dict[str, int]:
        """The handshake entry, as Firecracker 1.14 writes it."""
        return {**asdict(self), "page_size_kib": self.page_size}

    def contains(self, address: int) -> bool:
        """Whether ``address`` falls in this region."""
        return self.base_host_virt_addr <= address < self.base_host_virt_addr + self.size


def send_handshake(
    socket_path: str | os.PathLike[str], regions: Sequence[GuestRegion], uffd: int
) -> socket.socket:
    """Connect to a handler and send it the regions and the userfaultfd, as Firecracker does.

    Returns the connected socket (Firecracker keeps it open; so should the caller).
    """
    body = json.dumps([r.to_json() for r in regions]).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(os.fspath(socket_path))
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", uffd))]
        conn.sendmsg([body], rights)
    except BaseException:
        conn.close()
        raise
    return conn


# -- the handler side -------------------------------------------------------------------------


def receive_handshake(conn: socket.socket, timeout: float) -> tuple[list[GuestRegion], int]:
    """Read Firecracker's one message: the regions (JSON) and the userfaultfd.

    Raises:
        UffdError: the peer sent no descriptor, or no valid JSON in time.
    """
    conn.settimeout(timeout)
    data = b""
    uffd: int | None = None
    try:
        while True:
            try:
                chunk, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4))
            except TimeoutError:
                raise UffdError(f"no handshake from Firecracker within {timeout:g}s") from None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and uffd is None:
                    uffd = struct.unpack("i", payload[:4])[0]
            if not chunk:
                raise UffdError(f"Firecracker closed the socket after {len(data)} bytes")
            data += chunk
            with contextlib.suppress(ValueError):
                document = json.loads(data)
                break
        if uffd is None:
            raise UffdError("Firecracker's handshake carried no userfaultfd (SCM_RIGHTS)")
        if not isinstance(document, list) or not document:
            raise UffdError(f"the handshake is not a list of memory regions: {data[:200]!r}")
        try:
            regions = [GuestRegion.from_json(entry) for entry in document]
        except (KeyError, TypeError, ValueError) as exc:
            raise UffdError(f"bad memory region in the handshake: {exc}") from None
    except BaseException:
        if uffd is not None:
            os.close(uffd)
        raise
    return regions, uffd


def peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of ``conn`` (``SO_PEERCRED``), if known."""
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", data)[0]
    return pid
