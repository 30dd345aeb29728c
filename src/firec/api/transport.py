"""The Unix-socket HTTP transport the clients talk through, and its errors.

Firecracker serves its API as HTTP/1.1 on a Unix domain socket, with a fixed
dialect (micro_http): every response is framed by ``Content-Length`` (or has
no body), connections are kept alive, and the server serves at most 10
connections at a time (an 11th gets a 503 and is closed). :class:`UnixSocketTransport` and
:class:`AsyncUnixSocketTransport` speak just that dialect, straight from bytes
to :class:`httpx.Response`, as httpx transports. Any other
:class:`httpx.BaseTransport` (or :class:`httpx.AsyncBaseTransport`) can be
passed to the clients instead, for example :class:`httpx.MockTransport` in a
unit test::

    import httpx, firec

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"firecracker_version": "1.14.2"})

    client = firec.Client("/unused.sock", transport=httpx.MockTransport(handler))
    assert client.get_version().firecracker_version == "1.14.2"

What the transports do, and refuse:

* Timeouts come from ``request.extensions["timeout"]`` (httpx's
  ``connect``/``read``/``write``/``pool`` dict, seconds or ``None``) and raise
  :class:`httpx.ConnectTimeout`, :class:`httpx.ReadTimeout`,
  :class:`httpx.WriteTimeout` or :class:`httpx.PoolTimeout`.
* A socket that cannot be reached raises :class:`httpx.ConnectError` whose
  ``__cause__`` is the :class:`OSError` (:class:`FileNotFoundError`,
  :class:`ConnectionRefusedError`, :class:`PermissionError`...).
* A connection the server closes before answering raises
  :class:`httpx.RemoteProtocolError` (unless it said something first, like
  Firecracker's 503 ``Too many open connections``: that is the response); but a
  kept-alive connection found closed before anything was received is retried
  once on a new connection (every method Firecracker's API has, GET, PUT and
  PATCH, is idempotent). The asyncio transport also notices idle connections
  the server closes, and never uses them.
* A response the transport cannot frame exactly (``Transfer-Encoding``, a bad
  status line, a missing or contradictory ``Content-Length``, a head over
  64 KiB) raises :class:`httpx.RemoteProtocolError`; nothing is guessed.
* A connection is dropped, not reused, after such an error, after bytes
  arriving that no request asked for, and after an error response that is not
  an API-layer ``{"fault_message": ...}``: micro_http's own ``{ "error": ... }``
  replies mean the server may have lost track of the connection's requests.
* With a :attr:`~UnixSocketTransport.watch` (a :class:`RequestWatch`, which
  :class:`firec.Machine` sets to its VMM's :class:`~firec.vm.process.ExitWatch`),
  a request whose answer is slow to come asks it every ``watch.interval``
  seconds whether to give up, and raises :class:`RequestAbandoned` (closing
  the connection) when it says why: the VMM exited, or it hangs as it stops.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
import socket
import threading
import time
from typing import Protocol

import httpx

from firec.errors import ConnectError, TimeoutError, TransportError

__all__ = [
    "BASE_URL",
    "MAX_CONNECTIONS",
    "AsyncUnixSocketTransport",
    "RequestAbandoned",
    "RequestWatch",
    "UnixSocketTransport",
    "async_unix_transport",
    "transport_error",
    "unix_transport",
]

#: Firecracker's API ignores the host; httpx needs one.
BASE_URL = "http://localhost"

#: Connections one transport opens at most, by default. Firecracker serves 10
#: at a time (an 11th gets a 503 and is closed) and answers them one by one, so
#: more would only take connections away from other clients of the same VMM.
MAX_CONNECTIONS = 4

#: Methods retried on a fresh connection when a kept-alive one turns out to be
#: closed: all of Firecracker's, whose API is idempotent.
_RETRYABLE = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_HEAD = 64 * 1024
_RECV = 65536
_NO_TIMEOUTS: dict[str, float | None] = {}
_REQUEST_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_HTTP = b"HTTP/"


class _NothingReceived(Exception):
    """The connection was closed (or reset) before any byte of the response."""


class RequestWatch(Protocol):
    """Says when to stop waiting for an answer (see :attr:`UnixSocketTransport.watch`)."""

    #: Seconds between two calls of :meth:`check` while an answer is awaited.
    interval: float

    def check(self) -> str | None:
        """Why no answer will ever come (the request is then given up), or ``None``."""


class RequestAbandoned(httpx.ReadError):
    """The transport stopped waiting for an answer: its watch said none would come."""


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _next_wait(deadline: float | None, watch: RequestWatch | None) -> float | None:
    """Seconds to wait before the next look: until ``deadline``, at most ``watch.interval``."""
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if watch is None:
        return left
    return watch.interval if left is None else min(left, watch.interval)


def _give_up_if_told(deadline: float | None, watch: RequestWatch | None) -> None:
    """After a wait without an answer: the read timed out, or the watch says why not."""
    if deadline is not None and time.monotonic() >= deadline:
        raise httpx.ReadTimeout("timed out waiting for the response")
    reason = watch.check() if watch is not None else None
    if reason is not None:
        raise RequestAbandoned(f"gave up waiting for the answer: {reason}")


# -- requests ------------------------------------------------------------------


def serialize_request(request: httpx.Request, body: bytes) -> bytes:
    """The bytes of ``request`` on the wire, its ``body`` framed by Content-Length.

    The request's own ``Content-Length`` and ``Transfer-Encoding`` headers are
    replaced: the transport frames the (fully read) body itself. A ``Host``
    header is added from the URL when missing.

    >>> request = httpx.Request("GET", "http://localhost/vm/config")
    >>> serialize_request(request, b"")
    b'GET /vm/config HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n'
    """
    method = request.method.encode("ascii")
    parts = [method, b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    has_host = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in _REQUEST_FRAMING:
            continue
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError(f"header {name!r} contains a line break")
        has_host = has_host or lower == b"host"
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts += (b"Host: ", request.url.netloc, b"\r\n")
    if body or method in (b"PUT", b"PATCH", b"POST"):
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return b"".join(parts)


# -- responses -----------------------------------------------------------------


class _Head:
    """The parsed status line and headers of one response (shared: never mutated)."""

    __slots__ = ("extensions", "headers", "keep_alive", "length", "status")

    def __init__(
        self,
        version: bytes,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.headers = httpx.Headers(headers)  # each Response copies it
        self.extensions = {"http_version": version, "reason_phrase": reason}
        self.length = length
        self.keep_alive = keep_alive

    @property
    def reason(self) -> bytes:
        reason: bytes = self.extensions["reason_phrase"]
        return reason


def _check_partial_head(data: bytes) -> None:
    """Refuse, early, bytes that cannot be the start of a response head."""
    if data[:5] != _HTTP[: len(data)]:
        raise httpx.RemoteProtocolError(f"the server sent {data[:40]!r}, not an HTTP response")
    if len(data) > _MAX_HEAD:
        raise httpx.RemoteProtocolError(f"response head larger than {_MAX_HEAD} bytes")


@functools.lru_cache(maxsize=256)
def parse_head(head: bytes, method: str) -> _Head:
    """Parse a response head (without its final blank line) sent for ``method``.

    Raises :class:`httpx.RemoteProtocolError` for anything not exactly framed.
    Remembered: Firecracker sends the same few heads over and over.
    """
    lines = head.split(b"\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {status_line[:100]!r}")
    status = int(code)
    if status < 200:
        raise httpx.RemoteProtocolError(f"unexpected interim response {status_line[:100]!r}")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    connection = b""
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise httpx.RemoteProtocolError(f"malformed header line {line[:100]!r}")
        value = value.strip(b" \t")
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == b"transfer-encoding":
            raise httpx.RemoteProtocolError(
                f"response uses Transfer-Encoding: {value[:40].decode(errors='replace')}, "
                "which Firecracker never sends (it frames bodies with Content-Length)"
            )
        elif lower == b"connection":
            connection = value.lower()
    keep_alive = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
    if method == "HEAD" or status in (204, 304):
        length = 0
    elif length is None:
        # micro_http sends no Content-Length when there is no body, and keeps the
        # connection open; without that promise the end of the body is unknown.
        if connection != b"keep-alive":
            raise httpx.RemoteProtocolError(
                f"HTTP {status} response has no Content-Length: cannot tell where its body ends"
            )
        length = 0
    return _Head(version, status, reason, headers, length, keep_alive)


def _is_reusable_after(head: _Head, body: bytes) -> bool:
    """Whether the connection may carry another request after this response."""
    if not head.keep_alive:
        return False
    # An error that is not an API-layer {"fault_message": ...} comes from the
    # HTTP layer (micro_http), which may have dropped or mis-framed requests.
    return head.status < 400 or b'"fault_message"' in body


class _Incoming:
    """Assembles one response from the chunks received for a ``method`` request."""

    __slots__ = ("buffer", "have", "head", "method", "need", "parts", "start")

    def __init__(self, method: str) -> None:
        self.method = method
        self.buffer = b""  # bytes of an incomplete head
        self.head: _Head | None = None
        self.parts: list[bytes] = []  # everything received, once the head is complete
        self.have = self.start = self.need = 0

    def wanted(self) -> int:
        """How many bytes to ask the socket for next."""
        return _RECV if self.head is None else min(self.need - self.have, 1 << 20)

    def feed(self, chunk: bytes) -> bool:
        """Add received bytes; True once the whole response is in."""
        if self.head is not None:
            self.parts.append(chunk)
            self.have += len(chunk)
            return self.have >= self.need
        data = self.buffer + chunk if self.buffer else chunk
        end = data.find(b"\r\n\r\n")
        if end < 0:
            _check_partial_head(data)
            self.buffer = data
            return False
        self.head = parse_head(data[:end], self.method)
        self.start = end + 4
        self.need = self.start + self.head.length
        self.parts = [data]
        self.have = len(data)
        return self.have >= self.need

    def closed(self) -> Exception:
        """The error for the connection closing now."""
        if self.head is None:
            if not self.buffer:
                return _NothingReceived()
            return httpx.RemoteProtocolError("connection closed in the middle of the response")
        return httpx.RemoteProtocolError(
            f"connection closed after {self.have - self.start} of {self.head.length} body bytes"
        )

    def result(self) -> tuple[_Head, bytes, bool]:
        """(head, body, whether the connection may be reused)."""
        assert self.head is not None
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        body = data[self.start : self.need]
        # bytes beyond the response answer nothing we asked: do not reuse
        return self.head, body, len(data) == self.need and _is_reusable_after(self.head, body)


def _response(head: _Head, body: bytes, request: httpx.Request) -> httpx.Response:
    response = httpx.Response(
        head.status,
        headers=head.headers,
        stream=httpx.ByteStream(body),
        extensions=head.extensions,
        request=request,
    )
    # The body is already in memory: store it where Response.read() keeps what
    # it read, sparing its decoder and stream machinery (~7 us a call). Should
    # httpx keep it elsewhere one day, read() still gets it from the stream.
    response._content = body
    return response


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeouts: dict[str, float | None] | None = request.extensions.get("timeout")
    return timeouts if timeouts is not None else _NO_TIMEOUTS


def _closed_early(path: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        f"{path}: the server closed the connection without answering (is the VMM exiting? "
        "or it has too many API connections open: Firecracker serves at most 10)"
    )


# -- synchronous -----------------------------------------------------------------


class _Connection:
    """One kept-alive blocking socket and the timeout currently set on it."""

    __slots__ = ("sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout

    def settimeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def send(self, payload: bytes, timeout: float | None) -> None:
        self.settimeout(timeout)
        try:
            self.sock.sendall(payload)
        except builtins.TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _NothingReceived from exc
        except OSError as exc:
            raise httpx.WriteError(f"cannot send the request: {exc}") from exc

    def recv(self, size: int, timeout: float | None, watch: RequestWatch | None = None) -> bytes:
        deadline = _deadline(timeout) if watch is not None else None
        while True:
            self.settimeout(timeout if watch is None else _next_wait(deadline, watch))
            try:
                return self.sock.recv(size)
            except builtins.TimeoutError as exc:
                if watch is None:
                    raise httpx.ReadTimeout("timed out waiting for the response") from exc
                _give_up_if_told(deadline, watch)
            except ConnectionResetError:
                return b""
            except OSError as exc:
                raise httpx.ReadError(f"cannot read the response: {exc}") from exc

    def pending(self) -> bytes:
        """What the server sent before it hung up, without waiting."""
        self.settimeout(0.0)
        try:
            return self.sock.recv(_RECV)
        except OSError:
            return b""

    def exchange(
        self,
        payload: bytes,
        method: str,
        timeouts: dict[str, float | None],
        watch: RequestWatch | None = None,
    ) -> tuple[_Head, bytes, bool]:
        """Send one request, read its response: (head, body, reusable)."""
        incoming = _Incoming(method)
        done = False
        try:
            self.send(payload, timeouts.get("write"))
        except _NothingReceived:
            # Refused before it read our request? It may have said why first
            # (Firecracker: 503 "Too many open connections").
            if not (pending := self.pending()):
                raise
            done = incoming.feed(pending)
        read_timeout = timeouts.get("read")
        while not done:
            chunk = self.recv(incoming.wanted(), read_timeout, watch)
            if not chunk:
                raise incoming.closed()
            done = incoming.feed(chunk)
        return incoming.result()

    def close(self) -> None:
        self.sock.close()


class UnixSocketTransport(httpx.BaseTransport):
    """HTTP/1.1 to Firecracker's API socket at ``socket_path``, kept alive.

    At most ``max_connections`` connections are open at once (a request waits
    up to its ``pool`` timeout for one); idle ones are reused. Safe to share
    between threads.

    Attributes:
        watch: asked, while an answer is awaited, whether to give up (see the
            module documentation); ``None``: wait until the read timeout.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.socket_path = os.fspath(socket_path)
        self.max_connections = max_connections
        self.watch: RequestWatch | None = None
        self._idle: list[_Connection] = []
        self._busy = 0
        self._freed = threading.Condition(threading.Lock())
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} socket_path={self.socket_path!r}>"

    def _connect(self, timeout: float | None) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            while True:
                try:
                    sock.connect(self.socket_path)
                    return _Connection(sock, timeout)
                except BlockingIOError:
                    # The listen backlog is full. A blocking connect() would wait
                    # for room; with a timeout, Python gives up at once: retry.
                    if deadline is not None and time.monotonic() >= deadline:
                        raise httpx.ConnectTimeout(
                            f"{self.socket_path}: timed out connecting"
                        ) from None
                    time.sleep(0.001)
        except builtins.TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"{self.socket_path}: timed out connecting") from exc
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError(f"{self.socket_path}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole response."""
        payload = serialize_request(request, request.read())
        timeouts = _timeouts(request)
        self._acquire(timeouts.get("pool"))
        try:
            return self._send(request, payload, timeouts)
        finally:
            with self._freed:
                self._busy -= 1
                self._freed.notify()

    def _acquire(self, timeout: float | None) -> None:
        with self._freed:
            if self._busy >= self.max_connections and not self._freed.wait_for(
                lambda: self._busy < self.max_connections, timeout
            ):
                raise httpx.PoolTimeout(
                    f"{self.socket_path}: all {self.max_connections} connections stayed busy"
                )
            self._busy += 1

    def _send(
        self, request: httpx.Request, payload: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        method = request.method
        retry = method in _RETRYABLE
        while True:
            try:
                conn = self._idle.pop()
                reused = True
            except IndexError:
                conn = self._connect(timeouts.get("connect"))
                reused = False
            try:
                head, body, reusable = conn.exchange(payload, method, timeouts, self.watch)
            except _NothingReceived as exc:
                conn.close()
                if reused and retry:
                    # A kept-alive connection the server had closed: so are the
                    # other idle ones, most likely (a restarted VMM). Start afresh.
                    self._drop_idle()
                    retry = False
                    continue
                raise _closed_early(self.socket_path) from exc.__cause__
            except BaseException:
                conn.close()
                raise
            if reusable and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
            return _response(head, body, request)

    def _drop_idle(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break

    def close(self) -> None:
        """Close the idle connections; busy ones close when their request ends."""
        self._closed = True
        self._drop_idle()


# -- asyncio -----------------------------------------------------------------------


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


class _AsyncConnection:
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
                raise _NothingReceived from exc
            except OSError as exc:
                raise httpx.WriteError(f"cannot send the request: {exc}") from exc
            if not await _writable(self.sock, timeout):
                raise httpx.WriteTimeout("timed out sending the request")

    async def recv(
        self, size: int, timeout: float | None, watch: RequestWatch | None = None
    ) -> bytes:
        deadline = _deadline(timeout) if watch is not None else None
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
            wait = timeout if watch is None else _next_wait(deadline, watch)
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
                _give_up_if_told(deadline, watch)

    def pending(self) -> bytes:
        """What the server sent before it hung up, without waiting."""
        try:
            return self.sock.recv(_RECV)
        except OSError:
            return b""

    async def exchange(
        self,
        payload: bytes,
        method: str,
        timeouts: dict[str, float | None],
        watch: RequestWatch | None = None,
    ) -> tuple[_Head, bytes, bool]:
        """Send one request, read its response: (head, body, reusable)."""
        incoming = _Incoming(method)
        done = False
        try:
            await self.send(payload, timeouts.get("write"))
        except _NothingReceived:
            if not (pending := self.pending()):
                raise
            done = incoming.feed(pending)
        read_timeout = timeouts.get("read")
        while not done:
            chunk = await self.recv(incoming.wanted(), read_timeout, watch)
            if not chunk:
                raise incoming.closed()
            done = incoming.feed(chunk)
        return incoming.result()

    def close(self) -> None:
        self._unwatch()
        self.sock.close()


class AsyncUnixSocketTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`UnixSocketTransport` (non-blocking sockets, no threads).

    Concurrent requests each get their own connection, up to
    ``max_connections``; beyond that they wait (up to their ``pool`` timeout).

    Attributes:
        watch: as :attr:`UnixSocketTransport.watch` (checked on the event loop).
    """

    def __init__(
        self, socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.socket_path = os.fspath(socket_path)
        self.max_connections = max_connections
        self.watch: RequestWatch | None = None
        self._idle: list[_AsyncConnection] = []
        self._busy = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} socket_path={self.socket_path!r}>"

    async def _connect(self, timeout: float | None) -> _AsyncConnection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    sock.connect(self.socket_path)
                    return _AsyncConnection(sock)
                except BlockingIOError:
                    # AF_UNIX: the listen backlog is full; nothing is in progress,
                    # connect() must simply be tried again.
                    if deadline is not None and time.monotonic() >= deadline:
                        raise httpx.ConnectTimeout(
                            f"{self.socket_path}: timed out connecting"
                        ) from None
                    await asyncio.sleep(0.001)
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError(f"{self.socket_path}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise

    async def _acquire(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for a connection slot (all are busy)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter  # _release hands its slot over
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot arrived as we gave up: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, builtins.TimeoutError):
                raise httpx.PoolTimeout(
                    f"{self.socket_path}: all {self.max_connections} connections stayed busy"
                ) from None
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole response."""
        if isinstance(request.stream, httpx.SyncByteStream):
            content = request.read()  # already in memory: no need to await
        else:
            content = await request.aread()
        payload = serialize_request(request, content)
        timeouts = _timeouts(request)
        if self._busy < self.max_connections and not self._waiters:
            self._busy += 1  # the common case, without a coroutine
        else:
            await self._acquire(timeouts.get("pool"))
        try:
            return await self._send(request, payload, timeouts)
        finally:
            self._release()

    async def _send(
        self, request: httpx.Request, payload: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        method = request.method
        retry = method in _RETRYABLE
        while True:
            if self._idle:
                conn = self._idle.pop()
                if conn.stale:  # closed by the server while idle: never used
                    conn.close()
                    continue
                conn.busy = reused = True
            else:
                conn = await self._connect(timeouts.get("connect"))
                reused = False
            try:
                head, body, reusable = await conn.exchange(payload, method, timeouts, self.watch)
            except _NothingReceived as exc:
                conn.close()
                if reused and retry:
                    self._drop_idle()
                    retry = False
                    continue
                raise _closed_early(self.socket_path) from exc.__cause__
            except BaseException:
                conn.close()
                raise
            if reusable and not self._closed:
                conn.busy = False
                # watched while idle, to see the server hang up (the response may
                # have been there at once, so that nothing was watched yet)
                conn._watch(asyncio.get_running_loop())
                self._idle.append(conn)
            else:
                conn.close()
            return _response(head, body, request)

    def _drop_idle(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their request ends."""
        self._closed = True
        self._drop_idle()


# -- factories and errors ----------------------------------------------------------


def unix_transport(
    socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
) -> UnixSocketTransport:
    """A pooled, keep-alive transport to the API socket at ``socket_path``."""
    return UnixSocketTransport(socket_path, max_connections=max_connections)


def async_unix_transport(
    socket_path: str | os.PathLike[str], *, max_connections: int = MAX_CONNECTIONS
) -> AsyncUnixSocketTransport:
    """The asyncio twin of :func:`unix_transport`."""
    return AsyncUnixSocketTransport(socket_path, max_connections=max_connections)


def transport_error(exc: httpx.TransportError, socket_path: str) -> TransportError:
    """Translate an httpx failure into firec's error, naming the socket."""
    if isinstance(exc, RequestAbandoned):
        return ConnectError(f"Firecracker API socket {socket_path}: {exc}", socket_path=socket_path)
    if isinstance(exc, httpx.TimeoutException):
        detail = str(exc) or type(exc).__name__
        return TimeoutError(
            f"Firecracker API socket {socket_path} did not answer in time ({detail})",
            socket_path=socket_path,
        )
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, FileNotFoundError) or not os.path.exists(socket_path):
        reason = "the socket does not exist (is Firecracker running, with --api-sock there?)"
    elif isinstance(cause, ConnectionRefusedError):
        reason = "connection refused (the VMM has exited or is not serving its API)"
    elif isinstance(cause, PermissionError):
        reason = "permission denied (run as the socket's owner, or as root)"
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        reason = f"the connection broke ({exc}); the VMM may have died"
    else:
        reason = str(exc) or type(exc).__name__
    return ConnectError(
        f"cannot talk to Firecracker API socket {socket_path}: {reason}", socket_path=socket_path
    )
