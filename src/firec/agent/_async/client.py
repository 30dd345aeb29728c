"""The client of firec's guest agent, asynchronously.

A client is given a *connector*, a callable that opens one connection to
the agent (a Unix socket for tests and emulators; a Firecracker vsock
``CONNECT <port>`` for a microVM). It keeps a few connections open between
operations (one operation at a time on each, as HTTP/1.1 keep-alive) and
opens more for concurrent ones; a connection found dead when reused (the
agent restarted, a snapshot restored) is replaced and the operation retried
when nothing of it had been answered yet.
"""

# This file is the one source of both clients: client.py (the synchronous
# one) is generated from it by scripts/unasync.py.

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from firec.agent import protocol
from firec.agent._async.files import Data, Files, chunks
from firec.agent._async.io import Channel, Connector, both, unix_connector
from firec.agent._async.process import Process
from firec.agent.identity import GuestIdentity
from firec.agent.protocol import Kind, Payload
from firec.agent.results import AgentInfo, ExecResult
from firec.errors import AgentConnectionError, AgentError, CommandError

__all__ = ["AsyncClient"]

#: stdin smaller than this is sent before the output is read; larger, while it is read.
_SMALL_STDIN = 64 * 1024


def _exec_message(
    argv: Sequence[str] | str,
    *,
    env: Mapping[str, str | None] | None,
    env_clear: bool,
    cwd: str | os.PathLike[str] | None,
    user: str | int | None,
    stdin: bool,
    timeout: float | None,
    shell: bool,
    pty: bool | tuple[int, int],
) -> tuple[tuple[str, ...], dict[str, Any]]:
    if isinstance(argv, str):
        if not shell:
            raise ValueError(f"a command as one string needs shell=True (or give a list): {argv!r}")
        command: tuple[str, ...] = (argv,)
    else:
        command = tuple(os.fsdecode(a) for a in argv)
    if not command:
        raise ValueError("an empty command")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    message: dict[str, Any] = {"op": "exec", "argv": list(command), "stdin": stdin}
    if shell:
        message["shell"] = True
    if env is not None:
        message["env"] = dict(env)
    if env_clear:
        message["env_clear"] = True
    if cwd is not None:
        message["cwd"] = os.fsdecode(cwd)
    if timeout is not None:
        message["timeout"] = timeout
    if isinstance(user, int):
        message["uid"] = user
    elif user is not None and ":" in user:
        uid, _, gid = user.partition(":")
        if not (uid.isdigit() and gid.isdigit()):
            raise ValueError(f"user {user!r}: use a name, a uid, or 'uid:gid' in numbers")
        message["uid"], message["gid"] = int(uid), int(gid)
    elif user is not None:
        message["user"] = user
    if pty:
        rows, cols = pty if isinstance(pty, tuple) else (24, 80)
        message["pty"] = {"rows": rows, "cols": cols}
    shown = ("/bin/sh", "-c", *command) if shell else command
    return shown, message


class AsyncClient:
    """A connection pool to firec's guest agent, and what can be asked of it.

    Args:
        connector: opens one connection to the agent (see :mod:`firec.agent`).
        token: the agent's token, when it was started with one.
        pool_size: connections kept open between operations.
        connect_timeout: seconds to connect and hear the agent's hello.

    Example::

        import asyncio, firec.agent

        async def main() -> None:
            async with firec.agent.AsyncClient.unix("/run/agent.sock") as agent:
                result = await agent.exec(["uname", "-a"], check=True)
                print(result.stdout.decode())
                await agent.files.write("/tmp/hello.txt", "hello\\n")

        asyncio.run(main())
    """

    def __init__(
        self,
        connector: Connector,
        *,
        token: str | None = None,
        pool_size: int = 8,
        connect_timeout: float | None = 10.0,
    ) -> None:
        self._connector = connector
        self._token = token
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._idle: list[Channel] = []
        self._closed = False
        #: The guest's files: write, read, upload, download, list, stat, remove...
        self.files = Files(self)
        #: What the agent said of itself, once a connection was made.
        self.info: AgentInfo | None = None

    @classmethod
    def unix(cls, path: str | os.PathLike[str], **options: Any) -> AsyncClient:
        """A client of an agent listening on the Unix socket ``path`` (``--listen unix:PATH``)."""
        return cls(unix_connector(path), **options)

    # ---- connections ----

    async def _acquire(self) -> tuple[Channel, bool]:
        """A connection, and whether it was used before."""
        if self._closed:
            raise AgentConnectionError("this agent client is closed")
        while self._idle:
            channel = self._idle.pop()
            if channel.alive():
                return channel, True
            await channel.close()
        channel = await Channel.open(self._connector, self._token, self._connect_timeout)
        self.info = channel.info
        return channel, False

    async def _release(self, channel: Channel) -> None:
        if channel.broken or self._closed or len(self._idle) >= self._pool_size:
            await channel.close()
        else:
            self._idle.append(channel)

    async def reset(self) -> None:
        """Close the idle connections (after a snapshot restore, say: they are gone)."""
        idle, self._idle = self._idle, []
        for channel in idle:
            await channel.close()

    async def aclose(self) -> None:
        """Close every idle connection; the client can no longer be used."""
        self._closed = True
        await self.reset()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- one operation ----

    async def _call(
        self,
        message: Mapping[str, Any],
        *,
        op: str,
        target: str,
        send: Iterable[bytes] | None = None,
        receive: Callable[[Payload], None] | None = None,
    ) -> dict[str, Any]:
        """One operation: ``message``, then ``send``'s chunks (ended by an empty frame), or
        the agent's data frames to ``receive``; the agent's (last) reply."""
        request = protocol.encode_control(message)
        channel, _, first = await self._send_request(request, answer=True, send=send)
        assert first is not None
        kind, payload = first
        try:
            if kind != Kind.CONTROL:
                raise AgentError("protocol", f"the agent answered {op} with a {kind.name} frame")
            reply = protocol.decode_control(payload)
            if receive is not None and reply.get("ok") is True:
                reply = await self._receive(channel, receive, op) or reply
        except BaseException:
            await channel.close()
            raise
        await self._release(channel)
        return protocol.check_reply(reply, op=op, target=target)

    async def _send_request(
        self, request: bytes, *, answer: bool, send: Iterable[bytes] | None = None
    ) -> tuple[Channel, bool, tuple[Kind, Payload] | None]:
        """Send ``request`` (then ``send``'s chunks, ended by an empty frame) on a pooled
        connection, and hear the first frame of the answer when ``answer``: the connection,
        whether it was used before, and that frame (None without ``answer``).

        A reused connection found dead before the agent answered (it died while idle: the
        agent never saw the request) is closed and the request sent once more on a fresh
        one, unless data frames were sent; on any other failure the connection is closed
        and the error raised.
        """
        for attempt in range(2):
            channel, reused = await self._acquire()
            try:
                await channel.send_raw(request)
                if send is not None:
                    for piece in send:
                        await channel.send(Kind.DATA, piece)
                    await channel.send(Kind.DATA)
                first = await channel.recv() if answer else None
            except AgentConnectionError:
                await channel.close()
                if reused and send is None and attempt == 0:
                    continue  # a connection that died while idle: the agent never saw this
                raise
            except BaseException:
                await channel.close()
                raise
            return channel, reused, first
        raise AssertionError("unreachable")

    async def _receive(
        self, channel: Channel, receive: Callable[[Payload], None], op: str
    ) -> dict[str, Any] | None:
        """The data frames of a stream to ``receive``; None at its end, or the error reply
        that broke it off."""
        while True:
            kind, payload = await channel.recv()
            if kind == Kind.DATA:
                if not payload:
                    return None
                receive(payload)
            elif kind == Kind.CONTROL:
                reply = protocol.decode_control(payload)
                if reply.get("ok") is True:
                    raise AgentError("protocol", f"the agent ended {op} with an ok in the middle")
                return reply
            else:
                raise AgentError("protocol", f"a {kind.name} frame in the middle of {op}")

    # ---- processes ----

    async def _send_exec(
        self, shown: tuple[str, ...], message: dict[str, Any], timeout: float | None
    ) -> tuple[Process, bool]:
        """Send an exec that is not answered until it ends: its process, at once, and
        whether its connection was used before."""
        request = protocol.encode_control(message)
        channel, reused, _ = await self._send_request(request, answer=False)
        stdin = bool(message["stdin"])
        process = Process(
            channel, shown, 0, stdin_open=stdin, timeout=timeout, release=self._release
        )
        return process, reused

    async def _start(
        self, shown: tuple[str, ...], message: dict[str, Any], timeout: float | None
    ) -> Process:
        request = protocol.encode_control(message)
        channel, _, first = await self._send_request(request, answer=True)
        assert first is not None
        kind, payload = first
        reply = protocol.decode_control(payload) if kind == Kind.CONTROL else {}
        if reply.get("ok") is not True:
            if message["stdin"] and kind == Kind.CONTROL:
                await channel.send(Kind.DATA)  # the agent reads the stdin it was promised
                await self._release(channel)
            else:
                await channel.close()
            why = str(reply.get("message") or f"the agent answered exec with a {kind.name} frame")
            raise CommandError(shown, why, code=str(reply.get("error") or "protocol"))
        return Process(
            channel,
            shown,
            int(reply["pid"]),
            stdin_open=bool(message["stdin"]),
            timeout=timeout,
            release=self._release,
        )

    async def exec(
        self,
        argv: Sequence[str] | str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        user: str | int | None = None,
        stdin: Data | None = None,
        timeout: float | None = None,
        check: bool = False,
        shell: bool = False,
        env_clear: bool = False,
    ) -> ExecResult:
        """Run a command to its end; its :class:`~firec.agent.ExecResult`.

        ``argv`` runs as it is, with no shell; a string needs ``shell=True``
        (``/bin/sh -c``). ``env`` is set over the agent's environment (a
        ``None`` value unsets; ``env_clear`` starts from nothing), ``user`` is
        a name, a uid, or ``"uid:gid"``. ``stdin`` is bytes, text, a binary
        file or an iterable of chunks. After ``timeout`` seconds the agent
        kills it and :class:`~firec.errors.CommandTimeoutError` is raised;
        with ``check``, a non-zero exit raises :class:`~firec.errors.CommandError`.
        Both name the command and carry its result.
        """
        shown, message = _exec_message(
            argv,
            env=env,
            env_clear=env_clear,
            cwd=cwd,
            user=user,
            stdin=stdin is not None,
            timeout=timeout,
            shell=shell,
            pty=False,
        )
        message["started"] = False  # no answer until it ends: one round trip in all
        replayable = stdin is None or isinstance(stdin, bytes | str)
        for attempt in range(2):
            process, reused = await self._send_exec(shown, message, timeout)
            try:
                result = await self._feed_and_wait(process, stdin)
            except AgentConnectionError:
                if reused and replayable and not process.answered and attempt == 0:
                    continue  # a connection that died while idle: the agent never saw this
                raise
            break
        return result.check() if check else result

    async def _feed_and_wait(self, process: Process, stdin: Data | None) -> ExecResult:
        if stdin is None:
            return await process.wait()
        if isinstance(stdin, bytes | str) and len(stdin) <= _SMALL_STDIN:
            await process.write_stdin(stdin)
            await process.close_stdin()
            return await process.wait()
        source = stdin

        async def feed() -> None:
            for piece in chunks(source):
                await process.write_stdin(piece)
            await process.close_stdin()

        async def collect() -> ExecResult:
            return await process.wait()

        return await both(feed, collect)

    async def spawn(
        self,
        argv: Sequence[str] | str,
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        user: str | int | None = None,
        stdin: bool = True,
        pty: bool | tuple[int, int] = False,
        timeout: float | None = None,
        shell: bool = False,
        env_clear: bool = False,
    ) -> Process:
        """Start a command and return at once: a :class:`Process` to stream and steer it.

        The arguments are those of :meth:`exec`; ``stdin`` keeps its stdin
        open for :meth:`Process.write_stdin`, and ``pty`` gives it a terminal
        (``True``: 24x80, or ``(rows, cols)``), whose output is all on stdout.
        """
        shown, message = _exec_message(
            argv,
            env=env,
            env_clear=env_clear,
            cwd=cwd,
            user=user,
            stdin=stdin,
            timeout=timeout,
            shell=shell,
            pty=pty,
        )
        return await self._start(shown, message, timeout)

    # ---- the agent itself ----

    async def health(self) -> dict[str, Any]:
        """The agent's health answer (``{"ok": true, "uptime": ..., "pid1": ...}``)."""
        return await self._call({"op": "health"}, op="health", target="")

    async def version(self) -> AgentInfo:
        """The agent's version, protocol and capabilities."""
        return AgentInfo.from_json(await self._call({"op": "version"}, op="version", target=""))

    async def wait_ready(self, timeout: float = 30.0, *, interval: float = 0.02) -> AgentInfo:
        """Wait until the agent answers (a guest booting, say); what it says of itself.

        Connection failures are retried every ``interval`` seconds; other
        errors (a refused token) are raised at once. After ``timeout``
        seconds, :class:`~firec.errors.AgentConnectionError` says what the
        last attempt met.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.version()
            except AgentConnectionError as exc:
                if time.monotonic() + interval > deadline:
                    raise AgentConnectionError(
                        f"the agent did not answer within {timeout:g}s: {exc.message}",
                        op="wait_ready",
                    ) from exc
            await asyncio.sleep(interval)

    async def set_identity(self, identity: GuestIdentity) -> tuple[str, ...]:
        """Tell the guest who it is now: clock, random seed, hostname, MACs (``identity``).

        What a VM restored from a snapshot needs before code runs in it (see
        :mod:`firec.agent.identity`). Returns what the agent applied
        (``"time"``, ``"seed"``, ``"hostname"``, ``"mac eth0"``...): all of
        it as the guest's init; nothing as a service (firec's emulator),
        which only logs what it was given.

        Raises:
            AgentError: the agent refused a member (``bad_request``) or could
                not apply one (its message says which, and why).
        """
        reply = await self._call(identity.request(), op="identity", target="")
        return tuple(str(item) for item in reply.get("applied", ()))

    async def shutdown(self) -> None:
        """Ask the agent to end: as the guest's init, it ends every process, syncs and ends
        the guest (Firecracker exits); as a service, it ends its processes and exits."""
        await self._call({"op": "shutdown"}, op="shutdown", target="")
        await self.reset()
