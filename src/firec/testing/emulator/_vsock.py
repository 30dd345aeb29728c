"""The emulated vsock device: Firecracker's host side of vsock, and a guest that uses it.

Real Firecracker relays guest ``AF_VSOCK`` connections over Unix sockets
(see :mod:`firec.vm.vsock`). The emulator does the same with a thread per
connection, and the emulated guest takes two more command-line tokens
(firec's real tiny test guest has no vsock driver and ignores them):

* ``firec.vsock_listen=PORT``: the guest listens on vsock ``PORT`` and echoes
  every byte back until the host closes. A host ``CONNECT PORT`` on
  ``uds_path`` is answered ``OK <n>`` (``n`` counting up from 2**30, as
  Firecracker numbers host-side ports); a ``CONNECT`` to any other port gets
  its connection closed, as Firecracker does when the guest resets it.
* ``firec.vsock_connect=PORT``: right after boot the guest connects to host
  port ``PORT``, i.e. to ``<uds_path>_PORT`` (trying for
  :data:`CONNECT_PATIENCE` seconds while nothing listens there yet), sends
  ``firec-guest: vsock PORT\\n`` (:func:`greeting`) and echoes what comes back.

A guest that runs firec's agent (:mod:`._agent`) answers a ``CONNECT`` to
the agent's port with the agent. A guest with none of these behaves like one
without a vsock driver: a host ``CONNECT`` gets no answer at all, which is
what real Firecracker does with firec's tiny guest. Before boot and while
paused a ``CONNECT`` waits, unanswered.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING

from firec.testing.emulator import _agent
from firec.testing.emulator._jail import host_path

if TYPE_CHECKING:
    from firec.testing.emulator._state import VmmState

__all__ = ["CONNECT_TOKEN", "LISTEN_TOKEN", "greeting", "guest_boot", "serve"]

LISTEN_TOKEN = "firec.vsock_listen="
CONNECT_TOKEN = "firec.vsock_connect="
#: Seconds the guest keeps trying to reach a host port nobody listens on yet.
CONNECT_PATIENCE = 10.0
FIRST_HOST_PORT = 1 << 30
_MAX_REQUEST = 64
_ports = itertools.count(FIRST_HOST_PORT)


def greeting(port: int) -> bytes:
    """What the guest sends first on a connection it made to host ``port``."""
    return f"firec-guest: vsock {port}\n".encode()


def _ports_of(boot_args: str, token: str) -> list[int]:
    return [
        int(word[len(token) :])
        for word in boot_args.split()
        if word.startswith(token) and word[len(token) :].isdigit()
    ]


def _boot_args(vmm: VmmState) -> str:
    return str((vmm.boot_source or {}).get("boot_args") or "")


def _start(target: object, *args: object) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()  # type: ignore[arg-type]


def serve(vmm: VmmState, listener: socket.socket) -> None:
    """Accept host connections on the vsock ``listener`` for as long as it is the VMM's."""
    _start(_accept_loop, vmm, listener)


def _accept_loop(vmm: VmmState, listener: socket.socket) -> None:
    with selectors.DefaultSelector() as sel:
        try:
            sel.register(listener, selectors.EVENT_READ)
            while vmm.vsock_socket is listener:
                if sel.select(0.1):
                    conn, _ = listener.accept()
                    _start(_host_connection, vmm, conn)
        except (OSError, ValueError):
            pass  # the listener was closed (replaced by a new PUT /vsock)


def _read_request(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n") and len(line) < _MAX_REQUEST:
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


def _wait_running(vmm: VmmState) -> None:
    """Hold the connection, unanswered, until the guest runs."""
    while vmm.state != "Running":
        time.sleep(0.01)


def _host_connection(vmm: VmmState, conn: socket.socket) -> None:
    with conn:
        try:
            request = _read_request(conn)
            _wait_running(vmm)
            agent = _agent.open_for(vmm, request)
            if agent is not None:  # the guest's firec-agent (._agent)
                with agent:
                    conn.sendall(f"OK {next(_ports)}\n".encode())
                    _agent.pump(conn, agent)
                return
            listening = _ports_of(_boot_args(vmm), LISTEN_TOKEN)
            if not listening and not _ports_of(_boot_args(vmm), CONNECT_TOKEN):
                _drain(conn)  # no vsock driver in the guest: nobody ever answers
                return
            words = request.split()
            if (
                len(words) != 2
                or words[0] != b"CONNECT"
                or not words[1].isdigit()
                or int(words[1]) not in listening
            ):
                return  # the guest resets it: Firecracker closes the host connection
            conn.sendall(f"OK {next(_ports)}\n".encode())
            _echo(conn)
        except OSError:
            pass


def _drain(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)


def guest_boot(vmm: VmmState) -> None:
    """At boot: the guest's own connections to the host (``firec.vsock_connect=PORT``)."""
    if vmm.vsock is None:
        return
    for port in _ports_of(_boot_args(vmm), CONNECT_TOKEN):
        _start(_guest_connection, host_path(f"{vmm.vsock['uds_path']}_{port}"), port)


def _guest_connection(path: str, port: int) -> None:
    deadline = time.monotonic() + CONNECT_PATIENCE
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            break
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
    with conn:
        try:
            conn.sendall(greeting(port))
            _echo(conn)
        except OSError:
            pass
