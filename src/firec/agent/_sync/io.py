"""The I/O of :class:`firec.agent.Client`: one connection to the agent, on a blocking socket.

Written by hand, as is its asyncio twin :mod:`firec.agent._async.io`: both
define the same names with the same meaning (see there). Here a connection
is a connected stream socket; :func:`both` runs its first callable in a
thread, the only thread this flavour ever starts (for a command whose stdin
is fed while its output is read).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from firec.agent import protocol
from firec.agent.protocol import Kind, Payload
from firec.agent.results import AgentInfo
from firec.errors import AgentConnectionError, AgentError, TransportError

__all__ = ["ByteStream", "Channel", "Connector", "both", "unix_connector"]

T = TypeVar("T")

#: A callable that opens one connection to the agent: a connected stream socket.
Connector = Callable[[], socket.socket]
#: What a process's output iterators are on this flavour.
ByteStream = Iterator[bytes]

_CHUNK = 64 * 1024


def unix_connector(path: str | os.PathLike[str]) -> Connector:
    """A :data:`Connector` to an agent on the Unix socket ``path`` (``--listen unix:PATH``)."""
    where = os.fspath(path)

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(where)
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def both(first: Callable[[], None], second: Callable[[], T]) -> T:
    """Run ``first`` (in a thread) while ``second`` runs here; ``second``'s result."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            first()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="firec-agent-stdin", daemon=True)
    thread.start()
    try:
        result = second()
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return result


class Channel:
    """One connection to the agent, after its hello: frames out, frames in.

    Any failure to move bytes is an :class:`~firec.errors.AgentConnectionError`
    and leaves the channel :attr:`broken`, to be closed, never reused.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._scratch = bytearray(_CHUNK)
        self._timeout: float | None = None
        self.broken = False
        #: What the agent said of itself in its hello answer.
        self.info = AgentInfo(agent="", protocol=0)

    @classmethod
    def open(cls, connector: Connector, token: str | None, timeout: float | None) -> Channel:
        """Connect, say hello, and check the answer (a refused token raises its error)."""
        try:
            sock = connector()
        except (OSError, TransportError) as exc:
            raise AgentConnectionError(f"cannot connect to the agent: {exc}", op="connect") from exc
        sock.settimeout(None)
        channel = cls(sock)
        try:
            channel.send_raw(protocol.hello(token))
            kind, payload = channel.recv(timeout)
            if kind != Kind.CONTROL:
                raise AgentError("protocol", f"the agent answered hello with a {kind.name} frame")
            reply = protocol.check_reply(protocol.decode_control(payload), op="hello")
            channel.info = AgentInfo.from_json(reply)
        except TimeoutError:
            channel.close()
            raise AgentConnectionError(
                f"the agent did not answer hello within {timeout:g}s", op="hello"
            ) from None
        except BaseException:
            channel.close()
            raise
        return channel

    def alive(self) -> bool:
        """Not broken, and nothing (an end of file) waits to be read on it."""
        if self.broken:
            return False
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable and not self._buffer

    def _lost(self, exc: BaseException | None = None) -> AgentConnectionError:
        self.broken = True
        why = f": {exc}" if exc else ""
        return AgentConnectionError(f"the connection to the agent was lost{why}")

    def send_raw(self, data: bytes) -> None:
        """Send bytes already framed."""
        self._set_timeout(None)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._lost(exc) from exc

    def send(self, kind: Kind, payload: bytes = b"") -> None:
        """Send one frame."""
        if len(payload) > protocol.MAX_FRAME:
            raise ValueError(f"a frame holds at most {protocol.MAX_FRAME} bytes")
        header = protocol.HEADER.pack(len(payload), kind)
        self._set_timeout(None)
        try:
            if len(payload) < 4096:
                self._sock.sendall(header + payload)
                return
            sent = self._sock.sendmsg([header, payload])
            if sent < len(header):
                self._sock.sendall(header[sent:])
                sent = len(header)
            if sent - len(header) < len(payload):
                self._sock.sendall(memoryview(payload)[sent - len(header) :])
        except OSError as exc:
            raise self._lost(exc) from exc

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _fill(self, need: int) -> None:
        while len(self._buffer) < need:
            got = self._sock.recv_into(self._scratch)
            if got == 0:
                raise self._lost()
            self._buffer += memoryview(self._scratch)[:got]

    def recv(self, timeout: float | None = None) -> tuple[Kind, Payload]:
        """The next frame. ``timeout`` bounds the wait for it to begin (:class:`TimeoutError`,
        after which the channel is still usable); a closed connection raises."""
        size = protocol.HEADER.size
        try:
            if len(self._buffer) < size:
                self._set_timeout(timeout)
                self._fill(size)
                self._set_timeout(None)
            length, kind = protocol.parse_header(bytes(self._buffer[:size]))
            del self._buffer[:size]
            if len(self._buffer) >= length:
                payload = bytes(self._buffer[:length])
                del self._buffer[:length]
                return kind, payload
            out = bytearray(length)
            have = len(self._buffer)
            out[:have] = self._buffer
            self._buffer.clear()
            view = memoryview(out)
            while have < length:
                got = self._sock.recv_into(view[have:])
                if got == 0:
                    raise self._lost()
                have += got
            return kind, out  # no copy: a large payload stays the bytearray it was read into
        except TimeoutError:
            self._set_timeout(None)
            raise
        except AgentError:
            self.broken = True
            raise
        except OSError as exc:
            raise self._lost(exc) from exc

    def close(self) -> None:
        """Close the connection (the agent kills what runs on it)."""
        self.broken = True
        with contextlib.suppress(OSError):
            self._sock.close()
