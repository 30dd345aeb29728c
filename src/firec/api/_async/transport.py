"""HTTP/1.1 over Firecracker's API socket, pooled and kept alive, asynchronously.

Concurrent requests each get their own connection, up to ``max_connections``;
beyond that they wait (up to their ``pool`` timeout). The sockets, and how
they wait, are :mod:`firec.api._async.connection`'s; the HTTP framing is
:mod:`firec.api._http`'s. See :mod:`firec.api.transport` for what the
transport does and refuses.
"""

# This file is the one source of both transports: _sync/transport.py (the
# blocking UnixSocketTransport) is generated from it. Edit here, then run
# scripts/unasync.py.

from __future__ import annotations

import asyncio
import builtins
import os
import time

import httpx

from firec.api._async.connection import Connection, Slots, new_connection
from firec.api._http import (
    MAX_CONNECTIONS,
    RETRYABLE,
    Head,
    Incoming,
    NothingReceived,
    closed_early,
    request_timeouts,
    response,
    serialize_request,
)
from firec.api._watch import RequestWatch

__all__ = ["AsyncUnixSocketTransport", "async_unix_transport"]


async def exchange(
    conn: Connection,
    payload: bytes,
    method: str,
    timeouts: dict[str, float | None],
    watch: RequestWatch | None = None,
) -> tuple[Head, bytes, bool]:
    """Send one request on ``conn``, read its response: (head, body, reusable)."""
    incoming = Incoming(method)
    done = False
    try:
        await conn.send(payload, timeouts.get("write"))
    except NothingReceived:
        # Refused before it read our request? It may have said why first
        # (Firecracker: 503 "Too many open connections").
        if not (pending := conn.pending()):
            raise
        done = incoming.feed(pending)
    read_timeout = timeouts.get("read")
    while not done:
        chunk = await conn.recv(incoming.wanted(), read_timeout, watch)
        if not chunk:
            raise incoming.closed()
        done = incoming.feed(chunk)
    return incoming.result()


class AsyncUnixSocketTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to Firecracker's API socket at ``socket_path``, kept alive, asynchronously.

    At most ``max_connections`` connections are open at once (a request waits
    up to its ``pool`` timeout for one); idle ones are reused. Concurrent
    requests each get their own connection: it is safe to share between
    tasks of one event loop.

    Attributes:
        watch: asked, while an answer is awaited, whether to give up (see
            :mod:`firec.api.transport`); ``None``: wait until the read timeout.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.socket_path = os.fspath(socket_path)
        self.max_connections = max_connections
        self.watch: RequestWatch | None = None
        self._idle: list[Connection] = []
        self._slots = Slots(max_connections)
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} socket_path={self.socket_path!r}>"

    async def _connect(self, timeout: float | None) -> Connection:
        conn = new_connection(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    conn.sock.connect(self.socket_path)
                    return conn
                except BlockingIOError:
                    # AF_UNIX: the listen backlog is full; nothing is in progress,
                    # connect() must simply be tried again (a socket with a timeout
                    # gives up at once rather than wait for room).
                    if deadline is not None and time.monotonic() >= deadline:
                        raise httpx.ConnectTimeout(
                            f"{self.socket_path}: timed out connecting"
                        ) from None
                    await asyncio.sleep(0.001)
        except builtins.TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"{self.socket_path}: timed out connecting") from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(f"{self.socket_path}: {exc.strerror or exc}") from exc
        except BaseException:
            conn.close()
            raise

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole response."""
        if isinstance(request.stream, httpx.SyncByteStream):
            content = request.read()  # already in memory: no need to await
        else:
            content = await request.aread()
        payload = serialize_request(request, content)
        timeouts = request_timeouts(request)
        slots = self._slots
        if not slots.take() and not await slots.wait(timeouts.get("pool")):
            raise httpx.PoolTimeout(
                f"{self.socket_path}: all {self.max_connections} connections stayed busy"
            )
        try:
            return await self._send(request, payload, timeouts)
        finally:
            slots.release()

    async def _send(
        self, request: httpx.Request, payload: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        method = request.method
        retry = method in RETRYABLE
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                conn = await self._connect(timeouts.get("connect"))
                reused = False
            else:
                if not conn.take():  # closed by the server while idle: never used
                    conn.close()
                    continue
                reused = True
            try:
                head, body, reusable = await exchange(conn, payload, method, timeouts, self.watch)
            except NothingReceived as exc:
                conn.close()
                if reused and retry:
                    # A kept-alive connection the server had closed: so are the
                    # other idle ones, most likely (a restarted VMM). Start afresh.
                    self._drop_idle()
                    retry = False
                    continue
                raise closed_early(self.socket_path) from exc.__cause__
            except BaseException:
                conn.close()
                raise
            if reusable and not self._closed:
                conn.park()
                self._idle.append(conn)
            else:
                conn.close()
            return response(head, body, request)

    def _drop_idle(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:  # another thread took the last one (blocking transport)
                break

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their request ends."""
        self._closed = True
        self._drop_idle()


def async_unix_transport(
    socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
) -> AsyncUnixSocketTransport:
    """A pooled, keep-alive transport to the API socket at ``socket_path``, asynchronously."""
    return AsyncUnixSocketTransport(socket_path, max_connections=max_connections)
