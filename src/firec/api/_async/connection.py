"""The non-blocking sockets and pool slots of :class:`firec.api.transport.AsyncUnixSocketTransport`.

Hand-written, unlike the transport source beside it
(:mod:`firec.api._async.transport`, from which the blocking one is
generated): these wait on the running event loop (``loop.add_reader``, a
future per wait, a timer for each timeout), where the blocking twin
(:mod:`firec.api._sync.connection`) waits in the kernel with a socket
timeout and a :class:`threading.Condition`. The two modules have the same
names with the same meaning; what they wait for and when they give up is
decided by :mod:`firec.api._http` and :mod:`firec.api._watch`, shared by both.

An idle connection here stays watched by its loop, so that one the server
closes while idle is seen (``stale``) and never used: a blocking socket
cannot see that, and finds out when its request is answered by nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import socket

import httpx

from firec.api._http import RECV, NothingReceived
from firec.api._watch import RequestWatch, deadline, give_up_if_told, next_wait

__all__ = ["Connection", "Slots", "new_connection"]


def _settle(future: asyncio.Future[bool], ready: bool) -> None:
    if not future.done():
        future.set_result(ready)


async def _writable(sock: socket.socket, timeout: float | None) -> bool:
    """Wait until ``sock`` can take more bytes: False when ``timeout`` ran out."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _settle, future, True)
    timer = None if timeout is None else loop.call_later(timeout, _settle, future, False)
    try:
        return await future
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()


class Connection:
    """One kept-alive non-blocking socket, watched by an event loop.

    Adding and removing an event loop reader costs two ``epoll_ctl`` calls and
    some bookkeeping (~6 us), so the socket stays registered, for its whole
    life, with the loop that last used it. Readable while idle means the server
    closed it (or sent what nobody asked for): it is then marked ``stale``.
    """

    __slots__ = ("busy", "fd", "loop", "sock", "stale", "waiter")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.busy = True
        self.stale = False

    def take(self) -> bool:
        """Mark this idle connection busy; False if the server closed it meanwhile."""
        if self.stale:
            return False
        self.busy = True
        return True

    def park(self) -> None:
        """Set aside, idle, for the next request: watched, to see the server hang up.

        (The response may have been there at once, so that nothing was watched yet.)
        """
        self.busy = False
        self._watch(asyncio.get_running_loop())

    def _readable(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(True)
        elif not self.busy:
            # Often a late echo of the response the last request just read.
            try:
                self.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return
            except OSError:
                pass
            self.stale = True
            self._unwatch()
        # busy and not waiting yet: the request reads it when it gets there

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop:
            self._unwatch()
            loop.add_reader(self.fd, self._readable)
            self.loop = loop

    def _unwatch(self) -> None:
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.fd)

    async def send(self, payload: bytes, timeout: float | None) -> None:
        view = memoryview(payload)
        while view:
            try:
                view = view[self.sock.send(view) :]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise NothingReceived from exc
            except OSError as exc:
                raise httpx.WriteError(f"cannot send the request: {exc}") from exc
            if not await _writable(self.sock, timeout):
                raise httpx.WriteTimeout("timed out sending the request")

    async def recv(
        self, size: int, timeout: float | None, watch: RequestWatch | None = None
    ) -> bytes:
        until = deadline(timeout) if watch is not None else None
        while True:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return b""
            except OSError as exc:
                raise httpx.ReadError(f"cannot read the response: {exc}") from exc
            loop = asyncio.get_running_loop()
            self._watch(loop)
            waiter = self.waiter = loop.create_future()
            wait = timeout if watch is None else next_wait(until, watch)
            timer = None if wait is None else loop.call_later(wait, _settle, waiter, False)
            try:
                ready = await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
            if not ready:
                if watch is None:
                    raise httpx.ReadTimeout("timed out waiting for the response")
                give_up_if_told(until, watch)

    def pending(self) -> bytes:
        """What the server sent before it hung up, without waiting."""
        try:
            return self.sock.recv(RECV)
        except OSError:
            return b""

    def close(self) -> None:
        self._unwatch()
        self.sock.close()


def new_connection(timeout: float | None) -> Connection:
    """An unconnected non-blocking Unix socket (``timeout`` is the transport's to keep)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    return Connection(sock)


class Slots:
    """How many requests of one transport are under way: at most ``size``, on one loop.

    Taking a free slot is a plain call (no coroutine in the common case); a
    request finding all busy waits for one handed over by :meth:`release`,
    first come first served.
    """

    __slots__ = ("busy", "size", "waiters")

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.waiters: list[asyncio.Future[None]] = []

    def take(self) -> bool:
        """Take a free slot at once; False when all are busy (or others wait for one)."""
        if self.busy < self.size and not self.waiters:
            self.busy += 1
            return True
        return False

    async def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for a slot and take it; False if none came."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter  # release() hands its slot over
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as we gave up: pass it on
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            if isinstance(exc, builtins.TimeoutError):
                return False
            raise
        return True

    def release(self) -> None:
        """Give a slot back: to the first request waiting, if any."""
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1
