"""The emulated guest's agent: ``firec-agent`` as a host process, behind the vsock device.

No Linux user space boots where the emulator runs, so when the emulated
guest would run firec's guest agent, the emulator runs the real agent
(:func:`firec.agent.agent_binary`) as a host process standing in for it,
and forwards each host ``CONNECT <agent port>`` on the vsock device's
socket to it: the host's client goes through the same code as with real
Firecracker (:mod:`firec.vm.vsock`'s handshake, then the agent's protocol).

The guest runs the agent when the VM has a vsock device and its kernel
command line names the agent (:func:`~firec.vm.guest_agent.runs_agent`): ``init=`` a path ending in
``/firec-agent`` (as ``firec run`` boots an image firec built), or one of
the agent's own arguments, ``firec.agent_token=`` or ``firec.agent_port=``
(as a config with ``Builder.agent(...)`` has). It starts at
``InstanceStart`` and anew at each snapshot load (each clone runs its own),
and is asked to end (SIGTERM: it ends its processes, then itself) when the
emulator ends, however it ends, SIGKILL included (the kernel's parent-death
signal). It runs as ``firec-agent --service --listen unix:@NAME --cmdline
/dev/fd/N``: a socket in Linux's abstract namespace (no file to leave
behind), and the VM's command line through a pipe, from which it reads its
port and token as in a guest. Its messages go where the guest's console
goes. It runs commands as the emulator's user, on the host's files.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from firec.agent.binary import agent_binary
from firec.errors import FirecError
from firec.testing.emulator._jail import host_path
from firec.vm.guest_agent import agent_endpoint, runs_agent

if TYPE_CHECKING:
    from firec.testing.emulator._state import VmmState

__all__ = ["GuestAgent", "open_for", "pump", "start"]

#: Seconds a host connection waits for a starting agent to listen (a guest still booting).
LISTEN_PATIENCE = 5.0
_PR_SET_PDEATHSIG = 1
_names = itertools.count()


class GuestAgent:
    """One ``firec-agent`` process standing in for the guest's, and how to reach it."""

    def __init__(self, boot_args: str, console: str | None) -> None:
        self.port, _ = agent_endpoint(boot_args)
        name = f"firec-emulator-agent-{os.getpid()}-{next(_names)}-{secrets.token_hex(4)}"
        self.address = "\0" + name
        read, write = os.pipe()
        try:
            os.write(write, boot_args.encode() + b"\n")  # a command line fits in a pipe's buffer
            os.close(write)
            write = -1
            out = os.open(console, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if console else 1
            try:
                self.process = subprocess.Popen(
                    [
                        os.fspath(agent_binary()),
                        "--service",
                        "--listen",
                        f"unix:@{name}",
                        "--cmdline",
                        f"/dev/fd/{read}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                    pass_fds=(read,),
                    preexec_fn=_end_with_parent(os.getpid()),  # prctl only
                )
            finally:
                if out != 1:
                    os.close(out)
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)

    def connect(self) -> socket.socket | None:
        """A connection to the agent, waiting while it starts; ``None`` once it has ended."""
        deadline = time.monotonic() + LISTEN_PATIENCE
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.address)
                return sock
            except OSError:
                sock.close()
                if self.process.poll() is not None or time.monotonic() > deadline:
                    return None
                time.sleep(0.002)


def _end_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the emulator ends (SIGKILL included)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the emulator ended before the signal was armed
            os._exit(1)

    return arm


def start(vmm: VmmState) -> None:
    """At boot or after a snapshot load: run the agent, if this guest runs one.

    Called from the thread that serves the API, which lives as long as the
    emulator (the parent-death signal is the forking thread's).
    """
    boot_args = str((vmm.boot_source or {}).get("boot_args") or "")
    if vmm.vsock is None or not runs_agent(boot_args):
        return
    console = host_path(vmm.serial_out_path) if vmm.serial_out_path is not None else None
    try:
        vmm.agent = GuestAgent(boot_args, console)
    except (FirecError, OSError) as exc:  # as a guest whose agent fails: it never answers
        sys.stderr.write(f"firec emulator: the guest's firec-agent did not start: {exc}\n")
        sys.stderr.flush()


def open_for(vmm: VmmState, request: bytes) -> socket.socket | None:
    """For a host ``CONNECT <agent port>``: a connection to the agent, else ``None``.

    ``None`` also when the agent has ended: the guest resets the connection.
    """
    agent = vmm.agent
    words = request.split()
    if agent is None or words != [b"CONNECT", str(agent.port).encode()]:
        return None
    return agent.connect()


def pump(host: socket.socket, agent: socket.socket) -> None:
    """Carry bytes both ways until both sides are done (a thread for one way)."""
    back = threading.Thread(target=_copy, args=(agent, host), daemon=True)
    back.start()
    _copy(host, agent)
    back.join()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(1 << 20):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
