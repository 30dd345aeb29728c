"""HTTP/1.1 as Firecracker's API speaks it, without I/O: request bytes out, responses in.

Both transports (:mod:`firec.api._sync.transport`, generated from
:mod:`firec.api._async.transport`) put these bytes on their socket and feed
what comes back to an :class:`Incoming`; nothing here reads, writes or waits,
so the framing rules are the same for both by construction.

Firecracker's HTTP server (micro_http) frames every response by
``Content-Length`` (or sends no body), keeps connections alive and serves at
most 10 at a time. What cannot be framed exactly is refused with
:class:`httpx.RemoteProtocolError`; nothing is guessed.

Example::

    >>> incoming = Incoming("GET")
    >>> incoming.feed(b"HTTP/1.1 200 \\r\\nContent-Length: 2\\r\\n\\r\\n")
    False
    >>> incoming.feed(b"{}")
    True
    >>> head, body, reusable = incoming.result()
    >>> head.status, body, reusable
    (200, b'{}', True)
"""

from __future__ import annotations

import functools

import httpx

__all__ = [
    "BASE_URL",
    "MAX_CONNECTIONS",
    "RECV",
    "RETRYABLE",
    "Head",
    "Incoming",
    "NothingReceived",
    "closed_early",
    "parse_head",
    "request_timeouts",
    "response",
    "serialize_request",
]

#: Firecracker's API ignores the host; httpx needs one.
BASE_URL = "http://localhost"

#: Connections one transport opens at most, by default. Firecracker serves 10
#: at a time (an 11th gets a 503 and is closed) and answers them one by one, so
#: more would only take connections away from other clients of the same VMM.
MAX_CONNECTIONS = 4

#: Methods retried on a fresh connection when a kept-alive one turns out to be
#: closed: all of Firecracker's, whose API is idempotent.
RETRYABLE = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Bytes asked of the socket at a time while a response head is incomplete.
RECV = 65536
_MAX_HEAD = 64 * 1024
_NO_TIMEOUTS: dict[str, float | None] = {}
_REQUEST_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_HTTP = b"HTTP/"


class NothingReceived(Exception):
    """The connection was closed (or reset) before any byte of the response."""


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


def request_timeouts(request: httpx.Request) -> dict[str, float | None]:
    """httpx's ``connect``/``read``/``write``/``pool`` timeouts of ``request`` (may be empty)."""
    found: dict[str, float | None] | None = request.extensions.get("timeout")
    return found if found is not None else _NO_TIMEOUTS


# -- responses -----------------------------------------------------------------


class Head:
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
def parse_head(head: bytes, method: str) -> Head:
    """Parse a response head (without its final blank line) sent for ``method``.

    Raises :class:`httpx.RemoteProtocolError` for anything not exactly framed.
    Remembered: Firecracker sends the same few heads over and over.

    >>> parse_head(b"HTTP/1.1 204 \\r\\nConnection: keep-alive", "PUT").status
    204
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
    return Head(version, status, reason, headers, length, keep_alive)


def _is_reusable_after(head: Head, body: bytes) -> bool:
    """Whether the connection may carry another request after this response."""
    if not head.keep_alive:
        return False
    # An error that is not an API-layer {"fault_message": ...} comes from the
    # HTTP layer (micro_http), which may have dropped or mis-framed requests.
    return head.status < 400 or b'"fault_message"' in body


class Incoming:
    """Assembles one response from the chunks received for a ``method`` request."""

    __slots__ = ("buffer", "have", "head", "method", "need", "parts", "start")

    def __init__(self, method: str) -> None:
        self.method = method
        self.buffer = b""  # bytes of an incomplete head
        self.head: Head | None = None
        self.parts: list[bytes] = []  # everything received, once the head is complete
        self.have = self.start = self.need = 0

    def wanted(self) -> int:
        """How many bytes to ask the socket for next."""
        return RECV if self.head is None else min(self.need - self.have, 1 << 20)

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
                return NothingReceived()
            return httpx.RemoteProtocolError("connection closed in the middle of the response")
        return httpx.RemoteProtocolError(
            f"connection closed after {self.have - self.start} of {self.head.length} body bytes"
        )

    def result(self) -> tuple[Head, bytes, bool]:
        """(head, body, whether the connection may be reused)."""
        assert self.head is not None
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        body = data[self.start : self.need]
        # bytes beyond the response answer nothing we asked: do not reuse
        return self.head, body, len(data) == self.need and _is_reusable_after(self.head, body)


def response(head: Head, body: bytes, request: httpx.Request) -> httpx.Response:
    """The :class:`httpx.Response` to ``request``, its ``body`` already read."""
    answer = httpx.Response(
        head.status,
        headers=head.headers,
        stream=httpx.ByteStream(body),
        extensions=head.extensions,
        request=request,
    )
    # The body is already in memory: store it where Response.read() keeps what
    # it read, sparing its decoder and stream machinery (~7 us a call). Should
    # httpx keep it elsewhere one day, read() still gets it from the stream.
    answer._content = body
    return answer


def closed_early(path: str) -> httpx.RemoteProtocolError:
    """The error for a server at ``path`` that hung up without a byte of answer."""
    return httpx.RemoteProtocolError(
        f"{path}: the server closed the connection without answering (is the VMM exiting? "
        "or it has too many API connections open: Firecracker serves at most 10)"
    )
