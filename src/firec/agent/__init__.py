"""firec's guest agent: the program in the microVM, its protocol, and the host's client.

``firec-agent`` (C, in ``agent/`` at the top of the source tree, built with
firec) runs inside the guest, as its init or as a service, and listens on a
vsock port (:data:`DEFAULT_PORT`). The host asks it to run commands and move
files over a small framed protocol (``docs/agent-protocol.md``).

* :mod:`firec.agent.protocol`: the wire format, without I/O: frames,
  control messages, replies and their errors;
* :class:`Client` / :class:`AsyncClient`: the host's client: ``exec``,
  ``spawn`` (a :class:`Process` / :class:`AsyncProcess`), ``files``
  (write, read, upload, download, list, stat, mkdir, remove, chmod),
  ``health``, ``version``, ``wait_ready``, with a small connection pool
  (``_async/`` is the source, ``_sync/`` is generated; their ``io.py`` are
  written by hand);
* :mod:`firec.agent.results`: :class:`ExecResult`, :class:`FileInfo`,
  :class:`AgentInfo`;
* :class:`GuestIdentity` (:mod:`firec.agent.identity`): what makes a guest
  restored from a snapshot a machine of its own (clock, random seed,
  hostname, MACs), sent with the client's ``set_identity``;
* :func:`agent_binary`: where the built agent is (:mod:`firec.agent.binary`).

A client is given a *connector*, a callable that opens one connection: a
connected socket (:class:`Client`), or an asyncio ``(reader, writer)`` pair
(:class:`AsyncClient`). For an agent on a Unix socket (tests, emulators)
``Client.unix(path)`` makes one. For a microVM, the connector does
Firecracker's vsock handshake: ``lambda: firec.vm.vsock.connect(uds_path,
DEFAULT_PORT)``, or ``lambda: firec.vm.vsock.open_connection(uds_path,
DEFAULT_PORT, limit=4 << 20)`` for :class:`AsyncClient`. This room sits
below :mod:`firec.vm` and never imports it.

Errors (:mod:`firec.errors`): :class:`~firec.errors.AgentError` carries the
agent's own code and message; :class:`~firec.errors.CommandError` and
:class:`~firec.errors.CommandTimeoutError` name the command.

Example::

    from firec.agent import Client

    with Client.unix("/run/agent.sock", token="s3cret") as agent:
        agent.wait_ready(timeout=5)
        print(agent.exec(["echo", "hi"], check=True).stdout)  # b'hi\\n'
        with agent.spawn(["sh", "-c", "echo one; sleep 1; echo two"]) as proc:
            for chunk in proc.stdout:
                print(chunk)
        agent.files.upload("./src", "/work/src")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.agent import binary, identity, protocol, results
    from firec.agent._async.client import AsyncClient
    from firec.agent._async.process import Process as AsyncProcess
    from firec.agent._sync.client import Client
    from firec.agent._sync.process import Process
    from firec.agent.binary import agent_binary
    from firec.agent.identity import GuestIdentity
    from firec.agent.protocol import DEFAULT_PORT, PROTOCOL_VERSION
    from firec.agent.results import AgentInfo, ExecResult, FileInfo

__all__ = [
    "DEFAULT_PORT",
    "PROTOCOL_VERSION",
    "AgentInfo",
    "AsyncClient",
    "AsyncProcess",
    "Client",
    "ExecResult",
    "FileInfo",
    "GuestIdentity",
    "Process",
    "agent_binary",
    "binary",
    "identity",
    "protocol",
    "results",
]

_door, _dir = lazy_door(
    __name__,
    {
        "AsyncClient": "firec.agent._async.client",
        "Client": "firec.agent._sync.client",
        "Process": "firec.agent._sync.process",
        "AgentInfo": "firec.agent.results",
        "ExecResult": "firec.agent.results",
        "FileInfo": "firec.agent.results",
        "GuestIdentity": "firec.agent.identity",
        "DEFAULT_PORT": "firec.agent.protocol",
        "PROTOCOL_VERSION": "firec.agent.protocol",
        "agent_binary": "firec.agent.binary",
    },
    submodules=("binary", "identity", "protocol", "results"),
)


def __dir__() -> list[str]:
    return sorted({*_dir(), "AsyncProcess"})


def __getattr__(name: str) -> object:
    if name == "AsyncProcess":  # the asyncio flavour's Process, under its public name
        from firec.agent._async.process import Process as AsyncProcess

        globals()["AsyncProcess"] = AsyncProcess
        return AsyncProcess
    return _door(name)
