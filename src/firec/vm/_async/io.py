"""The waiting primitives of :class:`firec.AsyncMachine`: asyncio, and no thread per VM.

Not generated, unlike the machine (see :mod:`firec.vm._waiting`, which holds
what both flavours share): a process is watched through a pidfd, and a path
through the inotify fd, registered with the event loop, so any number of
microVMs run from one loop without a watcher thread each, where
:mod:`firec.vm._sync.io` blocks the calling thread in ``select()``. The names,
and what they mean, are the same in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec, TypeAlias, TypeVar

from firec.errors import TransportError
from firec.vm import vsock
from firec.vm._reaping import exit_code
from firec.vm._waiting import PRIMITIVES, open_pidfd, plan_pause
from firec.vm.streams import AsyncLineReader

__all__ = [*PRIMITIVES]

#: A connection to a guest vsock port.
VsockConnection: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]
#: A listener for guest connections to a host vsock port.
VsockListener: TypeAlias = vsock.AsyncVsockListener
#: What opens one connection to the guest agent (:data:`firec.agent._async.io.Connector`).
AgentConnector: TypeAlias = Callable[[], Awaitable[VsockConnection]]
#: The agent's frames are up to 1 MiB: a reader's buffer holds a few.
AGENT_LIMIT = 4 << 20

P = ParamSpec("P")
T = TypeVar("T")


async def gather(*calls: Callable[[], Awaitable[T]]) -> list[T | BaseException]:
    """Run ``calls`` concurrently on the loop; each one's result or exception, in order."""
    return await asyncio.gather(*(call() for call in calls), return_exceptions=True)


async def sleep(seconds: float) -> None:
    """Wait ``seconds``."""
    await asyncio.sleep(seconds)


async def yield_cpu() -> None:
    """Let other threads on this CPU run (a starting VMM), then other tasks of the loop."""
    os.sched_yield()
    await asyncio.sleep(0)


async def pause(waited: float, appears: Path | None = None) -> None:
    """Wait a little before looking again at something that has been awaited ``waited`` s.

    How long, and whether it only yields the CPU, is
    :func:`firec.vm._waiting.plan_pause`'s. With ``appears``, the wait ends as
    soon as an entry appears in its directory (inotify: the loop cannot sleep
    less than 1 ms).
    """
    plan = plan_pause(waited, appears)
    if plan is None:
        await yield_cpu()
        return
    delay, watch = plan
    if watch is None or appears is None:
        await asyncio.sleep(delay)
        return
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    here = threading.get_ident()

    def wake() -> None:
        if threading.get_ident() == here:  # pumped by this loop's reader: no self-pipe needed
            _settle(woken)
        else:
            loop.call_soon_threadsafe(_settle, woken)

    token = watch.watch(appears.parent, wake)
    if token is None:
        await asyncio.sleep(delay)
        return
    try:
        if appears.exists():
            return
        if watch.reader_added(loop):
            loop.add_reader(watch.fileno(), watch.pump)
        timer = loop.call_later(delay, _settle, woken)
        try:
            await woken
        finally:
            timer.cancel()
            if watch.reader_removed(loop):
                loop.remove_reader(watch.fileno())
    finally:
        watch.unwatch(token)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run slow file work (copying a disk image) off the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


async def wait_pid(
    pid: int, timeout: float | None, popen: subprocess.Popen[bytes] | None = None
) -> bool:
    """Wait until process ``pid`` has exited; ``False`` if ``timeout`` passed first.

    ``popen``, when the process is our child, reads as done once it has
    exited (its ``returncode`` set); it is reaped on a thread of its own, never
    waited for here (:mod:`firec.vm._reaping`: reaping can take the kernel
    seconds on a busy host).
    """
    pidfd = open_pidfd(pid, popen)
    if pidfd is None:
        return True
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await asyncio.wait_for(exited, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    if popen is not None:
        exit_code(popen)
    return True


async def drain(reader: AsyncLineReader, timeout: float) -> None:
    """Give ``reader`` up to ``timeout`` seconds to deliver what is left in its pipe."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.wait(), timeout)


async def vsock_connect(uds_path: Path, port: int, timeout: float | None) -> VsockConnection:
    """Connect to guest vsock ``port`` (see :func:`firec.vm.vsock.open_connection`)."""
    return await vsock.open_connection(uds_path, port, timeout=timeout)


async def vsock_listen(uds_path: Path, port: int, owner: tuple[int, int] | None) -> VsockListener:
    """Listen for guest connections to host ``port`` (see :func:`firec.vm.vsock.open_listener`)."""
    return await vsock.open_listener(uds_path, port, owner=owner)


def agent_connector(uds_path: Path, port: int, vm_id: str) -> AgentConnector:
    """A connector of :class:`firec.agent.AsyncClient` to the agent on guest vsock ``port``.

    Its errors name the microVM besides the port and the socket.
    """

    async def connect() -> VsockConnection:
        try:
            return await vsock.open_connection(uds_path, port, limit=AGENT_LIMIT)
        except TransportError as exc:
            raise type(exc)(f"microVM {vm_id}: {exc}", socket_path=exc.socket_path) from exc

    return connect


async def vsock_probe(uds_path: Path, port: int, timeout: float) -> None:
    """Connect to guest vsock ``port`` within ``timeout`` seconds, then hang up."""
    _, writer = await vsock.open_connection(uds_path, port, timeout=timeout)
    writer.close()
