"""A single-threaded HTTP/1.1 server on a Unix socket with micro_http's behaviour.

Requests are answered one at a time, in order, on keep-alive connections, like
Firecracker's API thread. HTTP-level failures get micro_http's replies
(``{ "error": "...\\nAll previous unanswered requests will be dropped." }``), and a
refused request whose body was not read poisons its connection, as in Firecracker.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["HttpServer", "Request"]

_MAX_CONNECTIONS = 10


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    uri: str
    body: str | None


@dataclass
class _Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    poisoned: bytes | None = None


def _error_reply(message: str, *, with_body: bool = True) -> bytes:
    head = "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n"
    if not with_body:
        return (head + "\r\n").encode()
    body = f'{{ "error": "{message}\nAll previous unanswered requests will be dropped." }}'
    data = body.encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def reply(status: int, body: str | None, *, deprecated: bool = False) -> bytes:
    """Serialize a response the way micro_http does (empty reason phrase)."""
    head = f"HTTP/1.1 {status} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n"
    if deprecated:
        head += "Deprecation: true\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = body.encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


class HttpServer:
    """Accepts connections on ``path`` and feeds complete requests to ``handler``."""

    def __init__(
        self,
        path: str,
        handler: Callable[[Request], bytes],
        *,
        payload_limit: int,
        methods: frozenset[str],
    ) -> None:
        self.path = path
        self.handler = handler
        self.payload_limit = payload_limit
        self.methods = methods
        self.sel = selectors.DefaultSelector()
        self.listener = _listen(path)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, _Conn] = {}

    def poll(self, timeout: float | None) -> None:
        """Serve whatever is ready within ``timeout`` seconds."""
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._accept()
            else:
                self._readable(key.data)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        if len(self.conns) >= _MAX_CONNECTIONS:
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        self.sel.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        while self._one(conn):
            pass

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(data)
        except OSError:
            pass
        finally:
            conn.sock.setblocking(False)

    def _one(self, conn: _Conn) -> bool:
        """Handle one complete request from the buffer; False when more bytes are needed."""
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        if conn.poisoned is not None:
            del buf[: end + 4]
            self._send(conn, conn.poisoned)
            return True
        head = bytes(buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        valid = len(parts) == 3
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                valid = False
                break
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            valid = False
            length = 0
        if not valid or headers.get("transfer-encoding", "").lower() == "chunked":
            return self._refuse(conn, end, length, "Invalid request.")
        method, uri, version = parts
        if method == "HEAD":
            del buf[: end + 4]
            self._send(conn, _error_reply("", with_body=False))
            return True
        if method not in self.methods:
            return self._refuse(conn, end, length, "Invalid HTTP Method: Unsupported HTTP method.")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            return self._refuse(
                conn, end, length, "Invalid HTTP Version: Unsupported HTTP version."
            )
        if length > self.payload_limit:
            return self._refuse(
                conn,
                end,
                length,
                f"Request payload with size {length} is larger than the limit of "
                f"{self.payload_limit} allowed by server.",
            )
        if len(buf) < end + 4 + length:
            return False
        body_bytes = bytes(buf[end + 4 : end + 4 + length])
        del buf[: end + 4 + length]
        if uri.startswith(("http://", "https://")):
            slash = uri.find("/", uri.find("//") + 2)
            uri = uri[slash:] if slash >= 0 else "/"
        body = body_bytes.decode("utf-8", "replace") if length else None
        self._send(conn, self.handler(Request(method, uri, body)))
        return True

    def _refuse(self, conn: _Conn, end: int, length: int, message: str) -> bool:
        reply_bytes = _error_reply(message)
        del conn.buf[: end + 4]
        if length:
            conn.poisoned = reply_bytes
        self._send(conn, reply_bytes)
        return True

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        self.sel.close()
        self.listener.close()


def _listen(path: str) -> socket.socket:
    """Bind and listen, then publish the socket at ``path`` atomically.

    Clients wait for the socket file to appear; it must accept connections from
    that moment on, so it is bound under a temporary name and hard-linked into
    place (which fails with EADDRINUSE-like EEXIST if ``path`` exists).
    Raises OSError (errno EADDRINUSE when ``path`` is taken).
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(path):
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        direct = len(tmp.encode()) > 107
        sock.bind(path if direct else tmp)
        sock.listen(64)
        if not direct:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
            finally:
                os.unlink(tmp)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


__all__ += ["reply"]
