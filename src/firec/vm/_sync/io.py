"""The waiting primitives of :class:`firec.Machine`: blocking, in the calling thread.

Not generated, unlike the machine (see :mod:`firec.vm._waiting`, which holds
what both flavours share): a blocking wait parks the thread in ``select()``
on a pidfd or on the inotify fd, and concurrent work takes a thread per call,
where :mod:`firec.vm._async.io` registers the same fds with the event loop.
The names, and what they mean, are the same in both.
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeAlias, TypeVar

from firec.errors import TransportError
from firec.vm import vsock
from firec.vm._reaping import exit_code
from firec.vm._waiting import PRIMITIVES, open_pidfd, plan_pause
from firec.vm.streams import LineReader

__all__ = [*PRIMITIVES]

#: A connection to a guest vsock port.
VsockConnection: TypeAlias = socket.socket
#: A listener for guest connections to a host vsock port.
VsockListener: TypeAlias = vsock.VsockListener
#: What opens one connection to the guest agent (:data:`firec.agent._sync.io.Connector`).
AgentConnector: TypeAlias = Callable[[], VsockConnection]

P = ParamSpec("P")
T = TypeVar("T")


def gather(*calls: Callable[[], T]) -> list[T | BaseException]:
    """Run ``calls`` concurrently, a thread each; each one's result or exception, in order."""
    if not calls:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.exception() or f.result() for f in futures]


def sleep(seconds: float) -> None:
    """Wait ``seconds``."""
    time.sleep(seconds)


def yield_cpu() -> None:
    """Let other threads on this CPU run (a starting VMM)."""
    os.sched_yield()


def pause(waited: float, appears: Path | None = None) -> None:
    """Wait a little before looking again at something that has been awaited ``waited`` s.

    How long, and whether it only yields the CPU, is
    :func:`firec.vm._waiting.plan_pause`'s. With ``appears``, the wait ends as
    soon as an entry appears in its directory (inotify).
    """
    plan = plan_pause(waited, appears)
    if plan is None:
        yield_cpu()
        return
    delay, watch = plan
    if watch is None or appears is None:
        time.sleep(delay)
        return
    woken = threading.Event()
    token = watch.watch(appears.parent, woken.set)
    if token is None:
        time.sleep(delay)
        return
    try:
        end = time.monotonic() + delay
        while not woken.is_set() and not appears.exists():
            left = end - time.monotonic()
            if left <= 0:
                return
            # Another thread may pump (and deliver) our event: then the full delay passes.
            if select.select([watch.fileno()], [], [], left)[0]:
                watch.pump()
    finally:
        watch.unwatch(token)


def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run slow file work (copying a disk image)."""
    return func(*args, **kwargs)


def wait_pid(pid: int, timeout: float | None, popen: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until process ``pid`` has exited; ``False`` if ``timeout`` passed first.

    ``popen``, when the process is our child, reads as done once it has
    exited (its ``returncode`` set); it is reaped on a thread of its own, never
    waited for here (:mod:`firec.vm._reaping`: reaping can take the kernel
    seconds on a busy host).
    """
    pidfd = open_pidfd(pid, popen)
    if pidfd is None:
        return True
    try:  # woken the moment it exits (Popen.wait(timeout) would poll, up to 50 ms late)
        exited = bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)
    if exited and popen is not None:
        exit_code(popen)
    return exited


def drain(reader: LineReader, timeout: float) -> None:
    """Give ``reader`` up to ``timeout`` seconds to deliver what is left in its pipe."""
    reader.wait(timeout)


def vsock_connect(uds_path: Path, port: int, timeout: float | None) -> VsockConnection:
    """Connect to guest vsock ``port`` (see :func:`firec.vm.vsock.connect`)."""
    return vsock.connect(uds_path, port, timeout=timeout)


def vsock_listen(uds_path: Path, port: int, owner: tuple[int, int] | None) -> VsockListener:
    """Listen for guest connections to host vsock ``port`` (see :func:`firec.vm.vsock.listen`)."""
    return vsock.listen(uds_path, port, owner=owner)


def agent_connector(uds_path: Path, port: int, vm_id: str) -> AgentConnector:
    """A connector of :class:`firec.agent.Client` to the agent on guest vsock ``port``.

    Its errors name the microVM besides the port and the socket.
    """

    def connect() -> VsockConnection:
        try:
            return vsock.connect(uds_path, port)
        except TransportError as exc:
            raise type(exc)(f"microVM {vm_id}: {exc}", socket_path=exc.socket_path) from exc

    return connect


def vsock_probe(uds_path: Path, port: int, timeout: float) -> None:
    """Connect to guest vsock ``port`` within ``timeout`` seconds, then hang up."""
    vsock.connect(uds_path, port, timeout=timeout).close()
