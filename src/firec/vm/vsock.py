"""Firecracker's vsock, from the host side: connect to guest ports, accept guest connections.

Firecracker's virtio-vsock device has no host kernel part: it relays each
guest ``AF_VSOCK`` connection over Unix domain sockets on the host
(Firecracker's ``docs/vsock.md``). The device is configured with one socket
path, ``uds_path`` (:meth:`firec.vm.config.Builder.vsock`), and:

* **host to guest**: connect to ``uds_path`` and send ``CONNECT <port>\\n``;
  once software in the guest accepts on that vsock port, Firecracker answers
  ``OK <host port>\\n`` and the stream is the guest connection from then on.
  When nothing in the guest listens, Firecracker closes the connection; when
  the guest cannot answer at all (not booted yet, paused, no vsock driver)
  nothing comes back. :func:`connect` and :func:`open_connection` do that
  handshake and turn both failures into an error saying
  ``nothing listens on vsock port N in the guest``.
* **guest to host**: a guest connecting to host CID 2, port ``P`` reaches
  whatever listens on the Unix socket ``<uds_path>_<P>``.
  :func:`listen`, :func:`start_server` and :func:`open_listener` make that
  socket, and remove the socket file again when closed.

Host to guest, blocking::

    from firec.vm import vsock

    with vsock.connect("/run/vm1/v.sock", 5000, timeout=2) as conn:
        conn.sendall(b"ping\\n")
        print(conn.recv(100))

Guest to host, with asyncio::

    import asyncio
    from firec.vm import vsock

    async def main() -> None:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            print(await reader.readline())
            writer.close()

        async with await vsock.start_server(greet, "/run/vm1/v.sock", 6000) as server:
            await server.serve_forever()  # guests connect to CID 2, port 6000

    asyncio.run(main())

A :class:`firec.Machine` does the same with paths translated into its jail:
``machine.vsock_connect(port)`` and ``machine.vsock_listen(port)``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from firec.errors import ConnectError, MachineError, TimeoutError, ValidationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncVsockListener",
    "VsockListener",
    "VsockServer",
    "connect",
    "listen",
    "listener_path",
    "open_connection",
    "open_listener",
    "remove_stale_socket",
    "start_server",
]

#: Seconds :func:`connect` waits for Firecracker's ``OK`` before giving up.
DEFAULT_TIMEOUT = 5.0
#: The largest vsock port (ports are 32-bit).
MAX_PORT = 2**32 - 1
#: The longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
#: Longest answer line accepted from Firecracker (``OK 4294967295\n`` is 14 bytes).
_MAX_ANSWER = 64
_BACKLOG = 16

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
"""The callback of :func:`start_server`, as for :func:`asyncio.start_unix_server`."""


def listener_path(uds_path: str | os.PathLike[str], port: int) -> Path:
    """Where guest connections to host port ``port`` arrive: ``<uds_path>_<port>``."""
    _check_port(port)
    return Path(f"{os.fspath(uds_path)}_{port}")


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise ValidationError("port", f"{port!r} is not a vsock port (an integer 0 to {MAX_PORT})")


# -- host to guest ---------------------------------------------------------------------


def _request(port: int) -> bytes:
    return f"CONNECT {port}\n".encode()


def _not_listening(port: int, path: str, why: str) -> str:
    return f"nothing listens on vsock port {port} in the guest: {why} ({path})"


def _connect_failure(exc: OSError, path: str) -> ConnectError:
    if isinstance(exc, FileNotFoundError):
        reason = "the socket does not exist (is the microVM running, with this vsock uds_path?)"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused (the Firecracker that made this socket has exited)"
    elif isinstance(exc, PermissionError):
        reason = "permission denied (run as the socket's owner, or as root)"
    else:
        reason = exc.strerror or str(exc)
    return ConnectError(f"cannot connect to vsock socket {path}: {reason}", socket_path=path)


def _no_answer(port: int, path: str, timeout: float | None) -> TimeoutError:
    why = (
        f"Firecracker sent no answer to CONNECT {port} within {timeout:g}s; the guest may "
        "not be running, may have no vsock driver, or nothing in it accepts on that port"
    )
    return TimeoutError(_not_listening(port, path, why), socket_path=path)


def _check_answer(line: bytes, port: int, path: str) -> int:
    """The host port in Firecracker's ``OK <port>\\n``, or the error for anything else."""
    if not line.endswith(b"\n"):
        why = "Firecracker closed the connection"
        if line:
            why += f" after {line!r}"
        raise ConnectError(_not_listening(port, path, why), socket_path=path)
    words = line.split()
    if len(words) != 2 or words[0] != b"OK" or not words[1].isdigit():
        raise ConnectError(
            f"unexpected answer to CONNECT {port} on vsock socket {path}: {line!r} "
            "(expected OK <port>)",
            socket_path=path,
        )
    return int(words[1])


def _read_answer(sock: socket.socket, deadline: float | None) -> bytes:
    """Read Firecracker's answer line byte by byte: what follows it is the guest's."""
    line = b""
    while not line.endswith(b"\n") and len(line) < _MAX_ANSWER:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise builtins.TimeoutError
            sock.settimeout(left)
        try:
            byte = sock.recv(1)
        except ConnectionResetError:
            break
        if not byte:
            break
        line += byte
    return line


def connect(
    uds_path: str | os.PathLike[str], port: int, *, timeout: float | None = DEFAULT_TIMEOUT
) -> socket.socket:
    """Connect to vsock ``port`` in the guest through the device's ``uds_path``.

    Does Firecracker's ``CONNECT <port>`` / ``OK <n>`` handshake and returns
    the connected socket (blocking, no timeout): what is sent and received on
    it from then on is the guest's. ``timeout`` bounds the connect and the
    handshake together (``None``: wait for ever).

    Raises:
        firec.errors.ConnectError: the socket is missing or refuses, or
            Firecracker closed the connection because nothing in the guest
            listens on ``port`` (``nothing listens on vsock port N in the guest``).
        firec.errors.TimeoutError: no answer within ``timeout``; the message
            says the same, since a guest without a listener (or without a
            vsock driver) may leave Firecracker silent.
        firec.errors.ValidationError: ``port`` is not a vsock port.

    Example::

        conn = connect("/run/vm1/v.sock", 5000, timeout=2)
        conn.sendall(b"hello")
    """
    _check_port(port)
    path = os.fspath(uds_path)
    deadline = time.monotonic() + timeout if timeout is not None else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except builtins.TimeoutError:
            raise _no_answer(port, path, timeout) from None
        except OSError as exc:
            raise _connect_failure(exc, path) from exc
        try:
            sock.sendall(_request(port))
            line = _read_answer(sock, deadline)
        except builtins.TimeoutError:
            raise _no_answer(port, path, timeout) from None
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        _check_answer(line, port, path)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection(
    uds_path: str | os.PathLike[str],
    port: int,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The asyncio twin of :func:`connect`: a ``(reader, writer)`` pair to guest ``port``.

    Same handshake, timeout and errors as :func:`connect`; ``limit`` is the
    reader's buffer limit (see :func:`asyncio.open_unix_connection`).

    Example::

        reader, writer = await open_connection("/run/vm1/v.sock", 5000, timeout=2)
        writer.write(b"ping\\n")
        print(await reader.readline())
    """
    _check_port(port)
    path = os.fspath(uds_path)
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                try:
                    reader, writer = await asyncio.open_unix_connection(path, limit=limit)
                except OSError as exc:
                    raise _connect_failure(exc, path) from exc
                try:
                    writer.write(_request(port))
                    await writer.drain()
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line = exc.partial
                except asyncio.LimitOverrunError:
                    line = await reader.read(_MAX_ANSWER)
                except (BrokenPipeError, ConnectionResetError):
                    line = b""
        except builtins.TimeoutError:
            raise _no_answer(port, path, timeout) from None
        _check_answer(line, port, path)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    return reader, writer


# -- guest to host ---------------------------------------------------------------------


def _bind(
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
        _unlink_if(path, None)
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


def _unlink_if(path: Path, inode: int | None) -> None:
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
            _unlink_if(self.path, inode)

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
            raise TimeoutError(
                f"no guest connected to vsock port {self.port} ({self.path}) within {timeout:g}s",
                socket_path=str(self.path),
            ) from None
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
    _, listener._inode = _bind(path, backlog, owner, listener)
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
            _unlink_if(self.path, inode)

    async def wait_closed(self) -> None:
        """Wait until the server is closed."""
        await self.server.wait_closed()

    async def serve_forever(self) -> None:
        """Accept connections until cancelled or closed."""
        await self.server.serve_forever()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
    sock, inode = _bind(path, backlog, owner)
    try:
        server = await asyncio.start_unix_server(client_connected_cb, sock=sock, limit=limit)
    except BaseException:
        sock.close()
        _unlink_if(path, inode)
        raise
    return VsockServer(server, path, port, inode)


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
            raise TimeoutError(
                f"no guest connected to vsock port {self.port} ({self.path}) within {timeout:g}s",
                socket_path=str(self.path),
            ) from None

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
    sock, inode = _bind(path, backlog, owner)
    queue: _Arrivals = asyncio.Queue()

    def arrived(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue.put_nowait((reader, writer))

    try:
        server = await asyncio.start_unix_server(arrived, sock=sock, limit=limit)
    except BaseException:
        sock.close()
        _unlink_if(path, inode)
        raise
    return AsyncVsockListener(server, path, port, inode, queue)
