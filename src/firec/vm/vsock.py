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

The host-to-guest side is here; :func:`connect` (blocking) and
:func:`open_connection` (asyncio) do their I/O each its own way, and share
the handshake itself, without I/O (what to send, what the answer means, which
error to raise). The guest-to-host side lives in ``_vsock_listen.py``, and
its names are importable from here.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import socket
import time

from firec.errors import ConnectError, TimeoutError
from firec.vm._vsock_listen import MAX_PORT as MAX_PORT
from firec.vm._vsock_listen import MAX_SOCKET_PATH as MAX_SOCKET_PATH
from firec.vm._vsock_listen import (
    AsyncVsockListener,
    VsockListener,
    VsockServer,
    check_port,
    listen,
    listener_path,
    open_listener,
    remove_stale_socket,
    start_server,
)
from firec.vm._vsock_listen import ClientConnected as ClientConnected

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
#: Longest answer line accepted from Firecracker (``OK 4294967295\n`` is 14 bytes).
_MAX_ANSWER = 64


class _Handshake:
    """Firecracker's ``CONNECT <port>`` / ``OK <n>`` for one connection, without the I/O.

    :func:`connect` and :func:`open_connection` send :attr:`request`, read one
    line, and ask :meth:`answer` what it means; what went wrong becomes the
    error this says, so both say the same.

    Example::

        >>> handshake = _Handshake("/run/vm1/v.sock", 5000, timeout=2)
        >>> handshake.request
        b'CONNECT 5000\\n'
        >>> handshake.answer(b"OK 1073741824\\n")
        1073741824
        >>> handshake.answer(b"")
        Traceback (most recent call last):
        ...
        firec.errors.ConnectError: nothing listens on vsock port 5000 in the guest: \
Firecracker closed the connection (/run/vm1/v.sock)
    """

    def __init__(self, uds_path: str | os.PathLike[str], port: int, timeout: float | None) -> None:
        check_port(port)
        self.path = os.fspath(uds_path)
        self.port = port
        self.timeout = timeout
        #: What to send once connected.
        self.request = f"CONNECT {port}\n".encode()

    def _not_listening(self, why: str) -> str:
        return f"nothing listens on vsock port {self.port} in the guest: {why} ({self.path})"

    def cannot_connect(self, exc: OSError) -> ConnectError:
        """The error for the socket refusing the connection with ``exc``."""
        if isinstance(exc, FileNotFoundError):
            reason = "the socket does not exist (is the microVM running, with this vsock uds_path?)"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (the Firecracker that made this socket has exited)"
        elif isinstance(exc, PermissionError):
            reason = "permission denied (run as the socket's owner, or as root)"
        else:
            reason = exc.strerror or str(exc)
        return ConnectError(
            f"cannot connect to vsock socket {self.path}: {reason}", socket_path=self.path
        )

    def no_answer(self) -> TimeoutError:
        """The error for no answer within the timeout."""
        why = (
            f"Firecracker sent no answer to CONNECT {self.port} within {self.timeout:g}s; the "
            "guest may not be running, may have no vsock driver, or nothing in it accepts on "
            "that port"
        )
        return TimeoutError(self._not_listening(why), socket_path=self.path)

    def answer(self, line: bytes) -> int:
        """The host port in Firecracker's ``OK <port>\\n``, or the error for anything else.

        ``line`` is what came before the connection closed, if it did.
        """
        if not line.endswith(b"\n"):
            why = "Firecracker closed the connection"
            if line:
                why += f" after {line!r}"
            raise ConnectError(self._not_listening(why), socket_path=self.path)
        words = line.split()
        if len(words) != 2 or words[0] != b"OK" or not words[1].isdigit():
            raise ConnectError(
                f"unexpected answer to CONNECT {self.port} on vsock socket {self.path}: "
                f"{line!r} (expected OK <port>)",
                socket_path=self.path,
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
    handshake = _Handshake(uds_path, port, timeout)
    deadline = time.monotonic() + timeout if timeout is not None else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(handshake.path)
        except builtins.TimeoutError:
            raise handshake.no_answer() from None
        except OSError as exc:
            raise handshake.cannot_connect(exc) from exc
        try:
            sock.sendall(handshake.request)
            line = _read_answer(sock, deadline)
        except builtins.TimeoutError:
            raise handshake.no_answer() from None
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        handshake.answer(line)
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
    handshake = _Handshake(uds_path, port, timeout)
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                try:
                    reader, writer = await asyncio.open_unix_connection(handshake.path, limit=limit)
                except OSError as exc:
                    raise handshake.cannot_connect(exc) from exc
                try:
                    writer.write(handshake.request)
                    await writer.drain()
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line = exc.partial
                except asyncio.LimitOverrunError:
                    line = await reader.read(_MAX_ANSWER)
                except (BrokenPipeError, ConnectionResetError):
                    line = b""
        except builtins.TimeoutError:
            raise handshake.no_answer() from None
        handshake.answer(line)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    return reader, writer
