"""Firecracker's vsock, guest to host: sockets the guest's connections arrive on.

A guest connecting to host CID 2, port ``P`` reaches whatever listens on the
Unix socket ``<uds_path>_<P>``. :func:`listen` (blocking sockets),
:func:`start_server` (an asyncio server with a callback) and
:func:`open_listener` (asyncio, connections taken one by one) make that
socket, and remove the socket file again when closed; all three bind it the
same way (:func:`bind`). The ports and paths both directions use are here too.
Everything is importable from :mod:`firec.vm.vsock`, the module to use.

Example::

    >>> listener_path("/run/vm1/v.sock", 6000)
    PosixPath('/run/vm1/v.sock_6000')
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

from firec.errors import MachineError, TimeoutError, ValidationError

__all__ = [
    "MAX_PORT",
    "MAX_SOCKET_PATH",
    "AsyncVsockListener",
    "ClientConnected",
    "VsockListener",
    "VsockServer",
    "bind",
    "check_port",
    "listen",
    "listener_path",
    "open_listener",
    "remove_stale_socket",
    "start_server",
    "unlink_if",
]

#: The largest vsock port (ports are 32-bit).
MAX_PORT = 2**32 - 1
#: The longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
_BACKLOG = 16

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
"""The callback of :func:`start_server`, as for :func:`asyncio.start_unix_server`."""


def listener_path(uds_path: str | os.PathLike[str], port: int) -> Path:
    """Where guest connections to host port ``port`` arrive: ``<uds_path>_<port>``."""
    check_port(port)
    return Path(f"{os.fspath(uds_path)}_{port}")


def check_port(port: int) -> None:
    """Refuse what is not a vsock port (:class:`~firec.errors.ValidationError`)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise ValidationError("port", f"{port!r} is not a vsock port (an integer 0 to {MAX_PORT})")


def _no_guest(port: int, path: Path, timeout: float | None) -> TimeoutError:
    """The error for no guest connection within ``timeout``, from either listener."""
    return TimeoutError(
        f"no guest connected to vsock port {port} ({path}) within {timeout:g}s",
        socket_path=str(path),
    )


def bind(
    path: Path, backlog: int, owner: tuple[int, int] | None, sock: socket.socket | None = None
) -> tuple[socket.socket, int]:
    """A socket listening at ``path`` (a stale socket file there is replaced), and its inode."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ValidationError(
            "uds_path",
            f"{path} is {size} bytes; a Unix socket path takes at most {MAX_SOCKET_PATH}: "
            "use a shorter vsock uds_path",
        )
    remove_stale_socket(path)
    sock = sock if sock is not None else socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        inode = os.stat(path).st_ino
        if owner is not None:
            os.chown(path, *owner)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        unlink_if(path, None)
        raise MachineError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock, inode


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on any more; refuse a live one or a non-socket.

    Raises:
        firec.errors.MachineError: something listens there, or the file is not a socket.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise MachineError(f"cannot listen on {path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # left behind by a listener that is gone
        return
    except OSError as exc:
        raise MachineError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    raise MachineError(f"cannot listen on {path}: another process already listens there")


def unlink_if(path: Path, inode: int | None) -> None:
    """Remove the socket file at ``path`` if it is still the one we made."""
    with contextlib.suppress(OSError):
        if inode is None or path.lstat().st_ino == inode:
            path.unlink()


class VsockListener(socket.socket):
    """A socket listening at ``<uds_path>_<port>`` for guest connections to host ``port``.

    It is a :class:`socket.socket`: :meth:`accept` gives a connected socket
    per guest connection. :meth:`close` (and leaving a ``with`` block) also
    removes the socket file. Made by :func:`listen`.

    Attributes:
        path: the socket file.
        port: the vsock port the guest connects to.
    """

    path: Path
    port: int
    _inode: int | None = None

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        inode, self._inode = self._inode, None
        super().close()
        if inode is not None:
            unlink_if(self.path, inode)

    def accept_within(self, timeout: float | None) -> socket.socket:
        """The next guest connection, waiting at most ``timeout`` seconds.

        Raises:
            firec.errors.TimeoutError: no guest connected in time.
        """
        previous = self.gettimeout()
        self.settimeout(timeout)
        try:
            conn, _ = self.accept()
        except builtins.TimeoutError:
            raise _no_guest(self.port, self.path, timeout) from None
        finally:
            self.settimeout(previous)
        conn.settimeout(None)
        return conn


def listen(
    uds_path: str | os.PathLike[str],
    port: int,
    *,
    backlog: int = _BACKLOG,
    owner: tuple[int, int] | None = None,
) -> VsockListener:
    """Listen for guest connections to host vsock ``port`` (on ``<uds_path>_<port>``).

    ``owner`` (uid, gid) is given to the socket file, so that a Firecracker
    running as another user (jailed) may connect to it. A stale socket file
    left at the path is replaced; a live one is not.

    Raises:
        firec.errors.MachineError: the path is in use, or cannot be bound.
        firec.errors.ValidationError: a bad port, or a path too long for a socket.

    Example::

        with listen("/run/vm1/v.sock", 6000) as listener:
            conn = listener.accept_within(30)   # the guest connected to CID 2, port 6000
            print(conn.recv(100))
    """
    path = listener_path(uds_path, port)
    listener = VsockListener(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.path, listener.port = path, port
    _, listener._inode = bind(path, backlog, owner, listener)
    return listener


class VsockServer:
    """An asyncio server on ``<uds_path>_<port>``; closing it removes the socket file.

    Made by :func:`start_server`. Use it as an async context manager, or call
    :meth:`close` and :meth:`wait_closed`.

    Attributes:
        path: the socket file.
        port: the vsock port the guest connects to.
        server: the underlying :class:`asyncio.Server`.
    """

    def __init__(self, server: asyncio.Server, path: Path, port: int, inode: int) -> None:
        self.server = server
        self.path = path
        self.port = port
        self._inode: int | None = inode

    def close(self) -> None:
        """Stop listening and remove the socket file (connections already made stay open)."""
        self.server.close()
        inode, self._inode = self._inode, None
        if inode is not None:
            unlink_if(self.path, inode)

    async def wait_closed(self) -> None:
        """Wait until the server is closed."""
        await self.server.wait_closed()

    async def serve_forever(self) -> None:
        """Accept connections until cancelled or closed."""
        await self.server.serve_forever()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} path={str(self.path)!r}>"


async def start_server(
    client_connected_cb: ClientConnected,
    uds_path: str | os.PathLike[str],
    port: int,
    *,
    backlog: int = _BACKLOG,
    owner: tuple[int, int] | None = None,
    limit: int = 2**16,
) -> VsockServer:
    """Serve guest connections to host vsock ``port`` with ``client_connected_cb``.

    Like :func:`asyncio.start_unix_server` on ``<uds_path>_<port>``: the
    callback gets ``(reader, writer)`` for each guest connection. ``owner``
    and the errors are those of :func:`listen`.
    """
    path = listener_path(uds_path, port)
    server, inode = await _serve(client_connected_cb, path, backlog, owner, limit)
    return VsockServer(server, path, port, inode)


async def _serve(
    client_connected_cb: ClientConnected,
    path: Path,
    backlog: int,
    owner: tuple[int, int] | None,
    limit: int,
) -> tuple[asyncio.Server, int]:
    """An asyncio server on a socket bound at ``path`` (see :func:`bind`), and its inode."""
    sock, inode = bind(path, backlog, owner)
    try:
        server = await asyncio.start_unix_server(client_connected_cb, sock=sock, limit=limit)
    except BaseException:
        sock.close()
        unlink_if(path, inode)
        raise
    return server, inode


_Arrivals = asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


class AsyncVsockListener(VsockServer):
    """Guest connections to host vsock ``port``, taken one by one with :meth:`accept`.

    Made by :func:`open_listener`; the asyncio twin of :class:`VsockListener`.
    """

    def __init__(
        self, server: asyncio.Server, path: Path, port: int, inode: int, queue: _Arrivals
    ) -> None:
        super().__init__(server, path, port, inode)
        self._queue = queue

    async def accept(
        self, timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The next guest connection as ``(reader, writer)``, waiting at most ``timeout``.

        Raises:
            firec.errors.TimeoutError: no guest connected in time.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except builtins.TimeoutError:
            raise _no_guest(self.port, self.path, timeout) from None

    async def accept_within(
        self, timeout: float | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Same as :meth:`accept` (the name :class:`VsockListener` uses)."""
        return await self.accept(timeout)

    def close(self) -> None:
        """Stop listening, remove the socket file, close connections nobody accepted."""
        super().close()
        while not self._queue.empty():
            _, writer = self._queue.get_nowait()
            writer.close()


async def open_listener(
    uds_path: str | os.PathLike[str],
    port: int,
    *,
    backlog: int = _BACKLOG,
    owner: tuple[int, int] | None = None,
    limit: int = 2**16,
) -> AsyncVsockListener:
    """Listen for guest connections to host vsock ``port``; take them with ``accept()``.

    The asyncio twin of :func:`listen`, same arguments and errors.

    Example::

        async with await open_listener("/run/vm1/v.sock", 6000) as listener:
            reader, writer = await listener.accept(timeout=30)
            print(await reader.readline())
    """
    path = listener_path(uds_path, port)
    queue: _Arrivals = asyncio.Queue()

    def arrived(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue.put_nowait((reader, writer))

    server, inode = await _serve(arrived, path, backlog, owner, limit)
    return AsyncVsockListener(server, path, port, inode, queue)
