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

The kernel's side (the userfaultfd, its ioctls, the mappings) is in
``_userfaultfd.py``; the handshake (:class:`GuestRegion`, sending and
receiving it) in ``_handshake.py``; the handler and ``python -m
firec.snapshots.uffd`` (:func:`main`) here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from firec.snapshots import _userfaultfd as _kernel
from firec.snapshots._handshake import GuestRegion, receive_handshake, send_handshake
from firec.snapshots._handshake import peer_pid as _peer_pid
from firec.snapshots._userfaultfd import (
    UffdError,
    map_anonymous,
    open_userfaultfd,
    register,
    unmap,
)

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


@dataclass
class _Peer:
    """One Firecracker the handler serves: its userfaultfd, memory and process."""

    uffd: int
    regions: list[GuestRegion]
    pid: int | None
    pidfd: int  # readable once that Firecracker exits (-1 when it could not be opened)
    removed: list[tuple[int, int]] = field(default_factory=list)  # (start, end) the balloon gave


class UffdHandler:
    """A page-fault handler serving guest memory from a snapshot's memory file.

    The socket is bound and listening once constructed; :meth:`start` runs the
    handler on a daemon thread (accept, handshake, then serve faults until
    :meth:`close` or until Firecracker goes away). Use it as a context manager,
    or call :meth:`close`.

    One handler can serve many clones of a snapshot (``clients=None``, or a
    number): one thread and one mapping of the memory file for all of them,
    each Firecracker connecting when its restore loads the snapshot (give the
    handler as ``uffd_handler`` to each restore, or to :meth:`Machine.clone
    <firec.Machine.clone>`). Each clone still gets its own copy of every page
    it touches (the pages go into its anonymous memory); what is shared is the
    handler. Example::

        with UffdHandler("/run/snap-uffd.sock", snap.memory_file, clients=None) as handler:
            clones = Machine.clone(snap, 10, backend="Uffd", uffd_handler=handler)

    Args:
        socket_path: the Unix socket to listen on (Firecracker's ``backend_path``;
            in a jail, its host path).
        memory_file: the snapshot's memory file (only read).
        owner: ``(uid, gid)`` to give the socket to (a jailed Firecracker's user).
        connect_timeout: seconds to wait for the first Firecracker's handshake
            (with ``clients=1``; a handler for many waits until closed).
        clients: how many Firecrackers it serves: it stops once they have all
            come and gone; ``None``: any number, until :meth:`close`.

    Attributes:
        pages_served: pages copied from the memory file so far (all clients).
        zero_pages: pages served as zeros (after a balloon removed them).
        peers_served: how many Firecrackers have connected so far.
        regions: the guest memory regions of the first handshake.
        peer_pid: the first Firecracker's process id (``SO_PEERCRED``).
        error: what stopped the handler, if it failed.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        memory_file: str | os.PathLike[str],
        *,
        owner: tuple[int, int] | None = None,
        connect_timeout: float = 30.0,
        clients: int | None = 1,
    ) -> None:
        if clients is not None and clients < 1:
            raise ValueError(f"clients must be at least 1 (or None), not {clients}")
        self.socket_path = Path(socket_path)
        self.memory_file = Path(memory_file)
        self.connect_timeout = connect_timeout
        self.clients = clients
        self.pages_served = 0
        self.zero_pages = 0
        self.peers_served = 0
        self.regions: list[GuestRegion] = []
        self.peer_pid: int | None = None
        self.error: BaseException | None = None
        self._removed: list[tuple[int, int]] = []  # the first peer's (see _Peer.removed)
        self._peers: dict[int, _Peer] = {}  # by userfaultfd and by pidfd
        self._source = (0, 0)  # the memory file's mapping: (address, size)
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
            self._listener.listen(1 if clients == 1 else 64)
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
        """Wait until a (the first) Firecracker's handshake arrived; ``False`` on timeout."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether a Firecracker's handshake arrived."""
        return self._connected.is_set()

    def serve(self) -> None:
        """Accept Firecrackers, take their handshakes and serve page faults (blocking).

        Returns when :meth:`close` is called, or once every client has come
        and gone; a failure is kept in :attr:`error`.
        """
        try:
            self._serve()
        except BaseException as exc:  # kept for the owner: a thread cannot raise to it
            self.error = exc
        finally:
            for fd in list(self._peers):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._peers.clear()
            address, size = self._source
            if address:
                unmap(address, size)
            self._source = (0, 0)

    def _serve(self) -> None:
        listener = self._listener.fileno()
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        listening, started = True, time.monotonic()
        while listening or self._peers:
            timeout = None
            if self.clients == 1 and not self.peers_served:
                left = self.connect_timeout - (time.monotonic() - started)
                if left <= 0:
                    raise UffdError(
                        f"Firecracker did not connect to {self.socket_path} "
                        f"within {self.connect_timeout:g}s"
                    )
                timeout = max(1, round(left * 1000))
            for fd, events in poller.poll(timeout):
                if fd == self._stop_read:
                    return
                if fd == listener:
                    self._take_peer(poller)
                    if self.clients is not None and self.peers_served >= self.clients:
                        poller.unregister(listener)
                        listening = False
                    continue
                peer = self._peers.get(fd)
                if peer is None:
                    continue  # dropped earlier in this round
                gone = fd != peer.uffd or bool(
                    events & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                )
                if not gone:
                    try:
                        gone = not self._serve_peer(peer)
                    except UffdError as exc:  # that guest's memory cannot be served: it
                        self.error = exc  # waits, killable; the others are served on
                        gone = True
                if gone:
                    self._drop(peer, poller)

    def _take_peer(self, poller: select.poll) -> None:
        """Accept a Firecracker, take its handshake, and serve it from now on."""
        conn, _ = self._listener.accept()
        with conn:
            regions, uffd = receive_handshake(conn, self.connect_timeout)
            pid = _peer_pid(conn)
        try:
            self._map_source(regions)
            pidfd = -1
            if pid is not None:
                with contextlib.suppress(OSError):
                    pidfd = os.pidfd_open(pid)
        except BaseException:
            os.close(uffd)
            raise
        peer = _Peer(uffd, regions, pid, pidfd)
        if not self.peers_served:
            self.regions, self.peer_pid, self._removed = regions, pid, peer.removed
        self.peers_served += 1
        self._peers[uffd] = peer
        poller.register(uffd, select.POLLIN)
        if pidfd >= 0:
            self._peers[pidfd] = peer
            poller.register(pidfd, select.POLLIN)
        self._connected.set()

    def _map_source(self, regions: list[GuestRegion]) -> None:
        """Map the memory file (once), refusing one too short for ``regions``."""
        size = os.fstat(self._memory_fd).st_size
        needed = max(r.offset + r.size for r in regions)
        if size < needed:
            raise UffdError(f"{self.memory_file} has {size} bytes; the guest memory needs {needed}")
        if not self._source[0]:
            address = _kernel.map_file(self._memory_fd, size, str(self.memory_file))
            self._source = (address, size)

    def _drop(self, peer: _Peer, poller: select.poll) -> None:
        """Stop serving ``peer`` (its Firecracker exited, or its userfaultfd failed)."""
        for fd in (peer.uffd, peer.pidfd):
            if fd >= 0 and self._peers.pop(fd, None) is not None:
                with contextlib.suppress(KeyError, ValueError):
                    poller.unregister(fd)
                os.close(fd)

    def _serve_peer(self, peer: _Peer) -> bool:
        """Answer what ``peer``'s userfaultfd holds; ``False`` once that Firecracker is gone."""
        try:
            data = os.read(peer.uffd, _kernel.MSG_SIZE * 64)
        except BlockingIOError:
            return True
        if not data:
            return False
        size = _kernel.MSG_SIZE
        for start in range(0, len(data) - size + 1, size):
            if not self._handle(peer, data[start : start + size]):
                return False
        return True

    def _handle(self, peer: _Peer, message: bytes) -> bool:
        event = message[0]
        first, second = struct.unpack_from("QQ", message, 8)
        if event == _kernel.UFFD_EVENT_REMOVE:  # (start, end) the balloon gave back
            peer.removed.append((first, second))
            return True
        if event == _kernel.UFFD_EVENT_UNMAP:
            return True
        if event != _kernel.UFFD_EVENT_PAGEFAULT:
            return True
        address = second  # (flags, address)
        region = next((r for r in peer.regions if r.contains(address)), None)
        if region is None:
            raise UffdError(f"page fault at {address:#x}, outside every guest memory region")
        page = address & ~(region.page_size - 1)
        if any(start <= page < end for start, end in peer.removed):
            return self._zero(peer.uffd, page, region.page_size)
        src = self._source[0] + region.offset + (page - region.base_host_virt_addr)
        return self._copy(peer.uffd, page, src, region.page_size)

    def _copy(self, uffd: int, page: int, src: int, length: int) -> bool:
        while True:
            try:
                _kernel.copy(uffd, page, src, length)
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
            _kernel.zeropage(uffd, page, length)
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


if __name__ == "__main__":
    raise SystemExit(main())
