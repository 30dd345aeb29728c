"""Serving a restored microVM's memory from userspace: a userfaultfd page-fault handler.

With the ``Uffd`` memory backend (Firecracker 1.1+), Firecracker does not map
the snapshot's memory file itself. As Firecracker's
``docs/snapshotting/handling-page-faults-on-snapshot-resume.md`` describes:

1. the handler listens on a Unix socket (the ``backend_path`` of the load);
2. Firecracker maps anonymous guest memory, registers it with a new
   userfaultfd, connects, and sends one message: a JSON list of the guest
   memory regions (``base_host_virt_addr``, ``size``, ``offset`` in the
   memory file, ``page_size``) with the userfaultfd attached (``SCM_RIGHTS``);
3. from then on, each first touch of a guest page stops the toucher and
   queues a page-fault event on the userfaultfd; the handler answers with
   ``UFFDIO_COPY`` of that page from the memory file. Pages the balloon
   removed (``UFFD_EVENT_REMOVE``) come back as zero pages.

:class:`UffdHandler` does this on a thread of its own::

    from firec.snapshots.uffd import UffdHandler

    with UffdHandler("/run/vm1-uffd.sock", "snap/memory") as handler:
        ...  # PUT /snapshot/load with mem_backend {"backend_type": "Uffd",
             #                                     "backend_path": "/run/vm1-uffd.sock"}
        handler.wait_connected(5.0)
        print(handler.pages_served)

``AsyncMachine.restore(snapshot, backend="Uffd")`` starts one per VM and
stops it with the VM. The functions :func:`open_userfaultfd`,
:func:`register`, :func:`map_anonymous` and :func:`send_handshake` are the
Firecracker side of the protocol (firec's emulator uses them).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from firec.errors import FirecError

__all__ = [
    "GuestRegion",
    "UffdError",
    "UffdHandler",
    "main",
    "map_anonymous",
    "open_userfaultfd",
    "receive_handshake",
    "register",
    "send_handshake",
    "unmap",
]


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (0xAA << 8) | nr


UFFD_API = 0xAA
UFFDIO_API = _iowr(0x3F, 24)
UFFDIO_REGISTER = _iowr(0x00, 32)
UFFDIO_COPY = _iowr(0x03, 40)
UFFDIO_ZEROPAGE = _iowr(0x04, 32)
UFFDIO_REGISTER_MODE_MISSING = 1
UFFD_FEATURE_EVENT_REMOVE = 1 << 3
UFFD_EVENT_PAGEFAULT = 0x12
UFFD_EVENT_REMOVE = 0x15
UFFD_EVENT_UNMAP = 0x16
_MSG_SIZE = 32
_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}

_PROT_READ, _PROT_WRITE = 1, 2
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long


class UffdError(FirecError):
    """The page-fault handler failed: no handshake, a bad message, an ioctl refused."""


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


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _ioctl(fd: int, request: int, payload: bytes) -> bytearray:
    buffer = bytearray(payload)
    fcntl.ioctl(fd, request, buffer, True)
    return buffer


# -- the Firecracker side -----------------------------------------------------------------


def open_userfaultfd(
    features: int = UFFD_FEATURE_EVENT_REMOVE,
    *,
    nonblocking: bool = True,
    device: str = "/dev/userfaultfd",
) -> int:
    """A new userfaultfd with the API handshake (``UFFDIO_API``) done.

    Uses the ``device`` (``/dev/userfaultfd``) where the ``userfaultfd`` system
    call is not allowed.
    """
    flags = os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    number = _SYS_USERFAULTFD.get(os.uname().machine)
    fd = -1
    if number is not None:
        fd = int(_libc.syscall(number, flags))
    if fd < 0:
        err = ctypes.get_errno()
        try:
            opened = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            raise UffdError(f"cannot create a userfaultfd: {os.strerror(err)}") from None
        try:
            fd = fcntl.ioctl(opened, 0xAA00, flags)  # USERFAULTFD_IOC_NEW
        finally:
            os.close(opened)
    try:
        _ioctl(fd, UFFDIO_API, struct.pack("QQQ", UFFD_API, features, 0))
    except OSError as exc:
        os.close(fd)
        raise UffdError(f"UFFDIO_API refused features {features:#x}: {exc.strerror}") from exc
    return fd


def map_anonymous(size: int) -> int:
    """Map ``size`` bytes of private anonymous memory; return the address."""
    address = _libc.mmap(
        None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0
    )
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap of anonymous memory failed")
    return int(address)


def unmap(address: int, size: int) -> None:
    """Undo :func:`map_anonymous` (or any mapping of ``size`` bytes at ``address``)."""
    _check(_libc.munmap(address, size), "munmap")


def register(uffd: int, address: int, size: int) -> None:
    """Register ``[address, address+size)`` with ``uffd`` for missing-page faults."""
    try:
        _ioctl(
            uffd,
            UFFDIO_REGISTER,
            struct.pack("QQQQ", address, size, UFFDIO_REGISTER_MODE_MISSING, 0),
        )
    except OSError as exc:
        raise UffdError(f"UFFDIO_REGISTER of {size} bytes at {address:#x}: {exc.strerror}") from exc


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


class UffdHandler:
    """A page-fault handler serving guest memory from a snapshot's memory file.

    The socket is bound and listening once constructed; :meth:`start` runs the
    handler on a daemon thread (accept, handshake, then serve faults until
    :meth:`close` or until Firecracker goes away). Use it as a context manager,
    or call :meth:`close`.

    Args:
        socket_path: the Unix socket to listen on (Firecracker's ``backend_path``;
            in a jail, its host path).
        memory_file: the snapshot's memory file (only read).
        owner: ``(uid, gid)`` to give the socket to (a jailed Firecracker's user).
        connect_timeout: seconds to wait for Firecracker's handshake.

    Attributes:
        pages_served: pages copied from the memory file so far.
        zero_pages: pages served as zeros (after a balloon removed them).
        regions: the guest memory regions of the handshake.
        peer_pid: Firecracker's process id (``SO_PEERCRED``).
        error: what stopped the handler, if it failed.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        memory_file: str | os.PathLike[str],
        *,
        owner: tuple[int, int] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.memory_file = Path(memory_file)
        self.connect_timeout = connect_timeout
        self.pages_served = 0
        self.zero_pages = 0
        self.regions: list[GuestRegion] = []
        self.peer_pid: int | None = None
        self.error: BaseException | None = None
        self._removed: list[tuple[int, int]] = []
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._memory_fd = os.open(self.memory_file, os.O_RDONLY | os.O_CLOEXEC)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            self._listener.bind(os.fspath(self.socket_path))
            if owner is not None:
                os.chown(self.socket_path, *owner)
            self._listener.listen(1)
        except BaseException:
            self._release()
            raise

    def start(self) -> Self:
        """Serve on a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve, name=f"firec-uffd:{self.socket_path.name}", daemon=True
            )
            self._thread.start()
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until Firecracker's handshake arrived; ``False`` on timeout."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether Firecracker's handshake arrived."""
        return self._connected.is_set()

    def serve(self) -> None:
        """Accept Firecracker, take the handshake and serve page faults (blocking).

        Returns when :meth:`close` is called or Firecracker exits; a failure
        is kept in :attr:`error`.
        """
        uffd = -1
        address, size = 0, 0
        try:
            conn = self._accept()
            if conn is None:
                return
            with conn:
                self.regions, uffd = receive_handshake(conn, self.connect_timeout)
                self.peer_pid = _peer_pid(conn)
            size = os.fstat(self._memory_fd).st_size
            needed = max(r.offset + r.size for r in self.regions)
            if size < needed:
                raise UffdError(
                    f"{self.memory_file} has {size} bytes; the guest memory needs {needed}"
                )
            mapped = _libc.mmap(None, size, _PROT_READ, _MAP_PRIVATE, self._memory_fd, 0)
            if mapped in (None, _MAP_FAILED):
                raise OSError(ctypes.get_errno(), f"mmap of {self.memory_file} failed")
            address = int(mapped)
            self._connected.set()
            self._loop(uffd, address)
        except BaseException as exc:  # kept for the owner: a thread cannot raise to it
            self.error = exc
        finally:
            if uffd >= 0:
                os.close(uffd)
            if address:
                unmap(address, size)

    def _accept(self) -> socket.socket | None:
        listener = self._listener.fileno()
        ready = select.select([listener, self._stop_read], [], [], self.connect_timeout)[0]
        if self._stop_read in ready:
            return None
        if not ready:
            raise UffdError(
                f"Firecracker did not connect to {self.socket_path} "
                f"within {self.connect_timeout:g}s"
            )
        conn, _ = self._listener.accept()
        return conn

    def _loop(self, uffd: int, source: int) -> None:
        poller = select.poll()
        poller.register(uffd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        peer = -1
        if self.peer_pid is not None:
            with contextlib.suppress(OSError):
                peer = os.pidfd_open(self.peer_pid)  # readable once Firecracker exits
                poller.register(peer, select.POLLIN)
        try:
            self._serve_events(poller, uffd, source, peer)
        finally:
            if peer >= 0:
                os.close(peer)

    def _serve_events(self, poller: select.poll, uffd: int, source: int, peer: int) -> None:
        while True:
            for fd, events in poller.poll():
                if fd in (self._stop_read, peer):
                    return
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    return  # Firecracker is gone
            try:
                data = os.read(uffd, _MSG_SIZE * 64)
            except BlockingIOError:
                continue
            if not data:
                return
            for start in range(0, len(data) - _MSG_SIZE + 1, _MSG_SIZE):
                if not self._handle(uffd, source, data[start : start + _MSG_SIZE]):
                    return

    def _handle(self, uffd: int, source: int, message: bytes) -> bool:
        event = message[0]
        first, second = struct.unpack_from("QQ", message, 8)
        if event == UFFD_EVENT_REMOVE:  # (start, end) the balloon gave back
            self._removed.append((first, second))
            return True
        if event == UFFD_EVENT_UNMAP:
            return True
        if event != UFFD_EVENT_PAGEFAULT:
            return True
        address = second  # (flags, address)
        region = next((r for r in self.regions if r.contains(address)), None)
        if region is None:
            raise UffdError(f"page fault at {address:#x}, outside every guest memory region")
        page = address & ~(region.page_size - 1)
        if any(start <= page < end for start, end in self._removed):
            return self._zero(uffd, page, region.page_size)
        src = source + region.offset + (page - region.base_host_virt_addr)
        return self._copy(uffd, page, src, region.page_size)

    def _copy(self, uffd: int, page: int, src: int, length: int) -> bool:
        while True:
            try:
                _ioctl(uffd, UFFDIO_COPY, struct.pack("QQQQq", page, src, length, 0, 0))
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue
                if exc.errno == errno.EEXIST:
                    return True  # already there (two vCPUs faulted on it)
                if exc.errno == errno.ESRCH:
                    return False  # Firecracker exited
                raise UffdError(f"UFFDIO_COPY of page {page:#x}: {exc.strerror}") from exc
            self.pages_served += 1
            return True

    def _zero(self, uffd: int, page: int, length: int) -> bool:
        try:
            _ioctl(uffd, UFFDIO_ZEROPAGE, struct.pack("QQQq", page, length, 0, 0))
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return True
            if exc.errno == errno.ESRCH:
                return False
            raise UffdError(f"UFFDIO_ZEROPAGE of page {page:#x}: {exc.strerror}") from exc
        self.zero_pages += 1
        return True

    def close(self) -> None:
        """Stop serving, close everything and remove the socket. Safe to call twice."""
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        if self._thread is not None:
            self._thread.join(10.0)
        self._release()

    def _release(self) -> None:
        for fd in (self._stop_read, self._stop_write, self._memory_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_read = self._stop_write = self._memory_fd = -1
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<UffdHandler {self.socket_path} pages_served={self.pages_served}>"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m firec.snapshots.uffd SOCKET MEMORY_FILE``: serve one restore, in a process.

    Listens on ``SOCKET``, serves the Firecracker that connects from
    ``MEMORY_FILE`` and exits when that Firecracker does (0) or on a failure
    (1, with the reason on stderr). Pass ``SOCKET`` (as Firecracker sees it)
    as ``uffd_handler`` to ``restore(..., backend="Uffd")``: then no thread of
    the caller's process (and its GIL) stands between the guest and its memory.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m firec.snapshots.uffd", description=main.__doc__
    )
    parser.add_argument("socket", help="the Unix socket to listen on")
    parser.add_argument("memory_file", help="the snapshot's memory file")
    parser.add_argument("--owner", help="UID:GID to give the socket to (a jailed Firecracker)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it")
    args = parser.parse_args(argv)
    owner = None
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        owner = (int(uid), int(gid or uid))
    try:
        handler = UffdHandler(
            args.socket, args.memory_file, owner=owner, connect_timeout=args.timeout
        )
    except OSError as exc:
        print(f"firec.uffd: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"firec.uffd: listening on {handler.socket_path}", flush=True)
        handler.serve()
    finally:
        handler.close()
    if handler.error is not None:
        print(f"firec.uffd: {handler.error}", file=sys.stderr)
        return 1
    print(f"firec.uffd: served {handler.pages_served} pages", flush=True)
    return 0


def _peer_pid(conn: socket.socket) -> int | None:
    try:
        data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", data)[0]
    return pid


if __name__ == "__main__":
    raise SystemExit(main())
