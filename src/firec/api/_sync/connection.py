"""The blocking sockets and pool slots of :class:`firec.api.transport.UnixSocketTransport`.

Hand-written, unlike the transport itself (generated from
:mod:`firec.api._async.transport`): a blocking socket waits in the kernel,
with the timeout set on the socket, and pool slots are counted under a
:class:`threading.Condition`, where the asyncio twin
(:mod:`firec.api._async.connection`) waits on its event loop. The two
modules have the same names with the same meaning; what they wait for and
when they give up is decided by :mod:`firec.api._http` and
:mod:`firec.api._watch`, shared by both.
"""

from __future__ import annotations

import builtins
import socket
import threading

import httpx

from firec.api._http import RECV, NothingReceived
from firec.api._watch import RequestWatch, deadline, give_up_if_told, next_wait

__all__ = ["Connection", "Slots", "new_connection"]


class Connection:
    """One kept-alive blocking socket and the timeout currently set on it."""

    __slots__ = ("sock", "timeout")

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout

    def settimeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def take(self) -> bool:
        """Whether this idle connection may carry a request (always: see the asyncio one)."""
        return True

    def park(self) -> None:
        """Set aside, idle, for the next request (nothing to do for a blocking socket)."""

    def send(self, payload: bytes, timeout: float | None) -> None:
        self.settimeout(timeout)
        try:
            self.sock.sendall(payload)
        except builtins.TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise NothingReceived from exc
        except OSError as exc:
            raise httpx.WriteError(f"cannot send the request: {exc}") from exc

    def recv(self, size: int, timeout: float | None, watch: RequestWatch | None = None) -> bytes:
        until = deadline(timeout) if watch is not None else None
        while True:
            self.settimeout(timeout if watch is None else next_wait(until, watch))
            try:
                return self.sock.recv(size)
            except builtins.TimeoutError as exc:
                if watch is None:
                    raise httpx.ReadTimeout("timed out waiting for the response") from exc
                give_up_if_told(until, watch)
            except ConnectionResetError:
                return b""
            except OSError as exc:
                raise httpx.ReadError(f"cannot read the response: {exc}") from exc

    def pending(self) -> bytes:
        """What the server sent before it hung up, without waiting."""
        self.settimeout(0.0)
        try:
            return self.sock.recv(RECV)
        except OSError:
            return b""

    def close(self) -> None:
        self.sock.close()


def new_connection(timeout: float | None) -> Connection:
    """An unconnected Unix socket whose ``connect()`` gives up after ``timeout`` seconds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return Connection(sock, timeout)


class Slots:
    """How many requests of one transport are under way: at most ``size``, across threads."""

    __slots__ = ("busy", "freed", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.freed = threading.Condition(threading.Lock())

    def take(self) -> bool:
        """Take a free slot at once; False when all are busy."""
        with self.freed:
            if self.busy < self.size:
                self.busy += 1
                return True
            return False

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for a slot and take it; False if none came."""
        with self.freed:
            if not self.freed.wait_for(lambda: self.busy < self.size, timeout):
                return False
            self.busy += 1
            return True

    def release(self) -> None:
        """Give a slot back (to a waiting request, if any)."""
        with self.freed:
            self.busy -= 1
            self.freed.notify()
