"""The I/O of :class:`firec.agent.AsyncClient`: one connection to the agent, on asyncio streams.

Written by hand, as is its blocking twin :mod:`firec.agent._sync.io`: both
define the same names (:data:`Connector`, :class:`Channel`,
:func:`unix_connector`, :func:`both`, :data:`ByteStream`) with the same
meaning, so the client, generated for both from one source, uses whichever
it is given. Frames are made and read with :mod:`firec.agent.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from firec.agent import protocol
from firec.agent.protocol import Kind, Payload
from firec.agent.results import AgentInfo
from firec.errors import AgentConnectionError, AgentError, TransportError

__all__ = ["ByteStream", "Channel", "Connector", "both", "unix_connector"]

T = TypeVar("T")

#: A callable that opens one connection to the agent: ``(reader, writer)``.
#: Give the reader a buffer limit of at least 1 MiB (``limit=``): frames are that large.
Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
#: What a process's output iterators are on this flavour.
ByteStream = AsyncIterator[bytes]

_LIMIT = 4 * protocol.MAX_FRAME


def unix_connector(path: str | os.PathLike[str]) -> Connector:
    """A :data:`Connector` to an agent on the Unix socket ``path`` (``--listen unix:PATH``)."""
    where = os.fspath(path)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(where, limit=_LIMIT)

    return connect


async def both(first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[T]]) -> T:
    """Run ``first`` and ``second`` concurrently (as tasks of one loop); ``second``'s result."""
    task = asyncio.ensure_future(first())
    try:
        result = await second()
    except BaseException:
        task.cancel()
        raise
    await task
    return result


class Channel:
    """One connection to the agent, after its hello: frames out, frames in.

    Any failure to move bytes is an :class:`~firec.errors.AgentConnectionError`
    and leaves the channel :attr:`broken`, to be closed, never reused.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.broken = False
        #: What the agent said of itself in its hello answer.
        self.info = AgentInfo(agent="", protocol=0)

    @classmethod
    async def open(cls, connector: Connector, token: str | None, timeout: float | None) -> Channel:
        """Connect, say hello, and check the answer (a refused token raises its error)."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await connector()
        except (OSError, TransportError) as exc:
            raise AgentConnectionError(f"cannot connect to the agent: {exc}", op="connect") from exc
        except TimeoutError:
            raise AgentConnectionError(
                f"cannot connect to the agent: no connection within {timeout:g}s", op="connect"
            ) from None
        channel = cls(reader, writer)
        try:
            await channel.send_raw(protocol.hello(token))
            kind, payload = await channel.recv(timeout)
            if kind != Kind.CONTROL:
                raise AgentError("protocol", f"the agent answered hello with a {kind.name} frame")
            reply = protocol.check_reply(protocol.decode_control(payload), op="hello")
            channel.info = AgentInfo.from_json(reply)
        except TimeoutError:
            await channel.close()
            raise AgentConnectionError(
                f"the agent did not answer hello within {timeout:g}s", op="hello"
            ) from None
        except BaseException:
            await channel.close()
            raise
        return channel

    def alive(self) -> bool:
        """Not broken, and the agent has not closed it (as far as the loop has seen)."""
        return not self.broken and not self._reader.at_eof() and not self._writer.is_closing()

    def _lost(self, exc: BaseException | None = None) -> AgentConnectionError:
        self.broken = True
        why = f": {exc}" if exc else ""
        return AgentConnectionError(f"the connection to the agent was lost{why}")

    async def send_raw(self, data: bytes) -> None:
        """Send bytes already framed."""
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise self._lost(exc) from exc

    async def send(self, kind: Kind, payload: bytes = b"") -> None:
        """Send one frame."""
        if len(payload) > protocol.MAX_FRAME:
            raise ValueError(f"a frame holds at most {protocol.MAX_FRAME} bytes")
        try:
            self._writer.write(protocol.HEADER.pack(len(payload), kind))
            if payload:
                self._writer.write(payload)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise self._lost(exc) from exc

    async def recv(self, timeout: float | None = None) -> tuple[Kind, Payload]:
        """The next frame. ``timeout`` bounds the wait for it to begin (:class:`TimeoutError`,
        after which the channel is still usable); a closed connection raises."""
        try:
            if timeout is None:
                header = await self._reader.readexactly(protocol.HEADER.size)
            else:
                async with asyncio.timeout(timeout):
                    header = await self._reader.readexactly(protocol.HEADER.size)
            length, kind = protocol.parse_header(header)
            payload = await self._reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise self._lost() from None
        except OSError as exc:
            raise self._lost(exc) from exc
        except AgentError:
            self.broken = True
            raise
        return kind, payload

    async def close(self) -> None:
        """Close the connection (the agent kills what runs on it)."""
        self.broken = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
