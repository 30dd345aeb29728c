"""A process started through the agent, while it runs: its output as it comes, stdin, signals.

A :class:`Process` owns the connection its exec went over until the process
has ended. Its output is read as it is asked for, one frame at a time under a
lock, so several readers (stdout in one task, stderr in another) share the
connection; what one stream's reader does not take waits in that stream's
buffer. Read both streams (or :meth:`Process.output`), or memory grows with
what is left unread.
"""

# This file is the one source of both flavours: process.py (the synchronous
# one) is generated from it by scripts/unasync.py.

from __future__ import annotations

import asyncio
import signal as signals
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from firec.agent import protocol
from firec.agent._async.io import ByteStream, Channel
from firec.agent.protocol import Kind
from firec.agent.results import ExecResult
from firec.errors import AgentError, CommandError, CommandTimeoutError

__all__ = ["Process"]


class Process:
    """A process running in the guest, started by ``spawn``.

    Iterate :attr:`stdout` and :attr:`stderr` for its output as it comes;
    :meth:`wait` for its :class:`~firec.agent.ExecResult`. Leaving the
    ``with`` block kills it if it still runs.

    Attributes:
        argv: the command.
        pid: its process id in the guest (0 until known, for a process
            started without waiting for the agent's answer).
    """

    def __init__(
        self,
        channel: Channel,
        argv: tuple[str, ...],
        pid: int,
        *,
        stdin_open: bool,
        timeout: float | None,
        release: Callable[[Channel], Any],
    ) -> None:
        self.argv = argv
        self.pid = pid
        self._channel = channel
        self._stdin_open = stdin_open
        self._timeout = timeout
        self._release = release
        self._buffers: dict[Kind, deque[bytes]] = {Kind.STDOUT: deque(), Kind.STDERR: deque()}
        self._ended = {Kind.STDOUT: False, Kind.STDERR: False}
        self._reply: dict[str, Any] | None = None
        #: Whether any frame of the agent's came back for it yet.
        self.answered = False
        self._failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "running" if self._reply is None else f"exited {self._reply}"
        return f"<Process pid={self.pid} argv={list(self.argv)!r} {state}>"

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended and that was read (``-N``: signal ``N``), else None."""
        if self._reply is None:
            return None
        return ExecResult.from_reply(self.argv, self.pid, self._reply, b"", b"", None).exit_code

    @property
    def stdout(self) -> ByteStream:
        """Its stdout, in chunks as they come (with a PTY, all its terminal output)."""
        return self._stream(Kind.STDOUT)

    @property
    def stderr(self) -> ByteStream:
        """Its stderr, in chunks as they come (nothing with a PTY)."""
        return self._stream(Kind.STDERR)

    async def _stream(self, kind: Kind) -> ByteStream:
        while True:
            chunk = await self._next(kind)
            if chunk is None:
                return
            yield chunk

    async def output(self) -> ByteStream:
        """Everything it writes, stdout and stderr alike, in the order it comes."""
        while True:
            chunk = await self._next(None)
            if chunk is None:
                return
            yield chunk

    def _take(self, kind: Kind | None) -> bytes | None:
        for k in (Kind.STDOUT, Kind.STDERR) if kind is None else (kind,):
            if self._buffers[k]:
                return self._buffers[k].popleft()
        return None

    def _has(self, kind: Kind | None) -> bool:
        kinds = (Kind.STDOUT, Kind.STDERR) if kind is None else (kind,)
        return any(self._buffers[k] for k in kinds)

    def _done(self, kind: Kind | None) -> bool:
        if self._reply is not None:
            return True
        return self._ended[kind] if kind is not None else all(self._ended.values())

    async def _next(self, kind: Kind | None) -> bytes | None:
        while True:
            chunk = self._take(kind)
            if chunk is not None:
                return chunk
            if self._done(kind):
                return None
            async with self._lock:
                if self._has(kind) or self._done(kind):
                    continue
                await self._pump(None)

    async def _pump(self, timeout: float | None) -> None:
        """Read one frame from the agent and put it where it belongs."""
        if self._failure is not None:
            raise self._failure
        try:
            kind, payload = await self._channel.recv(timeout)
            self.answered = True
        except TimeoutError:
            raise
        except BaseException as exc:
            self._failure = exc
            await self._channel.close()
            raise
        if kind in self._buffers:
            if payload:
                self._buffers[kind].append(bytes(payload))
            else:
                self._ended[kind] = True
        elif kind == Kind.CONTROL:
            reply = protocol.decode_control(payload)
            if reply.get("ok") is not True:  # it never started (exec's "started": false)
                why = str(reply.get("message") or f"the agent answered {reply!r}")
                code = str(reply.get("error") or "protocol")
                self._failure = CommandError(self.argv, why, code=code)
                await self._channel.close()
                raise self._failure
            self._reply = reply
            self.pid = int(reply.get("pid") or self.pid)
            await self._finish()
        else:
            self._failure = AgentError("protocol", f"a {kind.name} frame while a process runs")
            await self._channel.close()
            raise self._failure

    async def _finish(self) -> None:
        """It has ended: end our side of stdin (the agent reads it to its end), then give
        the connection back."""
        async with self._send_lock:
            if self._stdin_open:
                self._stdin_open = False
                await self._channel.send(Kind.DATA)
        await self._release(self._channel)

    async def write_stdin(self, data: bytes | str) -> None:
        """Write to its stdin (a ``str`` is UTF-8 encoded)."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        async with self._send_lock:
            if not self._stdin_open:
                raise ValueError(f"the stdin of {self.argv[0]} (pid {self.pid}) is closed")
            view = memoryview(payload)
            for start in range(0, len(payload), protocol.MAX_FRAME):
                await self._channel.send(Kind.DATA, bytes(view[start : start + protocol.MAX_FRAME]))

    async def close_stdin(self) -> None:
        """End its stdin (with a PTY: a ^D, the end of input at the start of a line)."""
        async with self._send_lock:
            if self._stdin_open and self._reply is None:
                self._stdin_open = False
                await self._channel.send(Kind.DATA)

    async def _control(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self._reply is None and not self._channel.broken:
                await self._channel.send(Kind.CONTROL, protocol.encode_control(message)[5:])

    async def signal(self, sig: int, *, group: bool = False) -> None:
        """Send it signal ``sig`` (to its whole process group with ``group``).

        Nothing happens once it has ended.
        """
        number = int(sig)
        if not 0 < number < 65:
            raise ValueError(f"no signal {number}: signals are 1 to 64")
        await self._control({"op": "signal", "signal": number, "group": group})

    async def kill(self) -> None:
        """SIGKILL it and its process group."""
        await self.signal(signals.SIGKILL, group=True)

    async def resize(self, rows: int, cols: int) -> None:
        """Resize its terminal (a PTY's only; it gets SIGWINCH)."""
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise ValueError(f"a terminal of {rows}x{cols}: rows and cols are 1 to 65535")
        await self._control({"op": "resize", "rows": rows, "cols": cols})

    async def wait(self, timeout: float | None = None) -> ExecResult:
        """Wait until it ends; its result, with the output nobody read yet.

        Raises :class:`~firec.errors.CommandTimeoutError` (with ``killed``
        false: it still runs) when ``timeout`` seconds pass first, and when
        the agent killed it at the exec's own timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._reply is None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                async with self._lock:
                    if self._reply is None:
                        await self._pump(left)
            except TimeoutError:
                raise CommandTimeoutError(self.argv, timeout or 0.0, killed=False) from None
        result = ExecResult.from_reply(
            self.argv,
            self.pid,
            self._reply,
            b"".join(self._buffers[Kind.STDOUT]),
            b"".join(self._buffers[Kind.STDERR]),
            self._timeout,
        )
        self._buffers[Kind.STDOUT].clear()
        self._buffers[Kind.STDERR].clear()
        if result.timed_out:
            result.check()
        return result

    async def aclose(self) -> None:
        """Kill it if it still runs (by closing its connection: the agent kills its group)."""
        if self._reply is None:
            await self._channel.close()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
