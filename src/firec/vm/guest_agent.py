"""How a microVM's host side finds the guest agent: its vsock port and its token.

firec's guest agent (:mod:`firec.agent`, ``docs/agent.md``) reads its
settings from the kernel command line: ``firec.agent_port=N`` (default
:data:`~firec.agent.DEFAULT_PORT`) and ``firec.agent_token=T``. A config
that says :class:`AgentSettings` (``Builder.agent(...)``) has them added to
the command line the guest boots with; the machine's agent client
(``machine.exec``, ``machine.files``...) reads them back from the guest's
command line, so a VM restored from a snapshot, or a clone, is reached with
the token its guest was booted with.

Example::

    >>> from firec.vm.guest_agent import AgentSettings, agent_endpoint, boot_args
    >>> settings = AgentSettings(port=5000, token="s3cret")
    >>> settings  # the token is never shown
    AgentSettings(port=5000)
    >>> boot_args("console=ttyS0", settings)
    'console=ttyS0 firec.agent_port=5000 firec.agent_token=s3cret'
    >>> agent_endpoint("console=ttyS0 firec.agent_token=s3cret")
    (61932, 's3cret')
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from firec.agent.protocol import DEFAULT_PORT
from firec.errors import ConfigError

__all__ = [
    "PORT_ARG",
    "TOKEN_ARG",
    "AgentSettings",
    "agent_endpoint",
    "boot_args",
    "hide_token",
    "hide_tokens",
    "new_token",
    "runs_agent",
]

#: The kernel arguments the agent reads (their names have a dot: the kernel passes them on).
PORT_ARG = "firec.agent_port="
TOKEN_ARG = "firec.agent_token="
_TOKEN_WORD = re.compile(re.escape(TOKEN_ARG) + r"[A-Za-z0-9._-]+")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def new_token() -> str:
    """A fresh random token: 32 hex digits (128 bits)."""
    return secrets.token_hex(16)


def check_port(port: object, field_name: str = "agent.port") -> int:
    """``port`` if it is a vsock port the agent may listen on (1 to 2**32 - 2)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 0xFFFFFFFF:
        raise ConfigError(field_name, f"{port!r} is not a vsock port (1 to 4294967294)")
    return port


def check_token(token: object, field_name: str = "agent.token") -> str:
    """``token`` if it can be a kernel argument: 1 to 128 letters, digits, ``-``, ``_``, ``.``."""
    if not isinstance(token, str) or not 0 < len(token) <= 128 or not set(token) <= _TOKEN_CHARS:
        raise ConfigError(
            field_name,
            "must be 1 to 128 letters, digits, '-', '_' or '.' (it goes on the kernel command "
            "line)",
        )
    return token


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """Where the guest agent listens, and the token it asks for (``None``: none).

    Set with :meth:`Builder.agent <firec.vm._config_builder.BuilderSetters.agent>`,
    which makes a random token unless given one. The token is left out of the
    repr (and so of logs and tracebacks).

    Attributes:
        port: the agent's vsock port in the guest.
        token: the token the agent refuses connections without.
    """

    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_port(self.port)
        if self.token is not None:
            check_token(self.token)

    def kernel_args(self) -> str:
        """The kernel arguments that tell the agent these settings."""
        args = [] if self.port == DEFAULT_PORT else [f"{PORT_ARG}{self.port}"]
        if self.token is not None:
            args.append(f"{TOKEN_ARG}{self.token}")
        return " ".join(args)


def boot_args(kernel_args: str | None, agent: AgentSettings | None) -> str | None:
    """The command line a guest boots with: ``kernel_args``, and the agent's arguments.

    An argument already on ``kernel_args`` is not given twice.
    """
    if agent is None:
        return kernel_args
    words = (kernel_args or "").split()
    added = [a for a in agent.kernel_args().split() if a.split("=")[0] + "=" not in _names(words)]
    return " ".join([*words, *added]) or None


def _names(words: list[str]) -> set[str]:
    return {word.split("=")[0] + "=" for word in words if "=" in word}


def agent_endpoint(cmdline: str | None) -> tuple[int, str | None]:
    """The agent's ``(port, token)`` as a guest booted with ``cmdline`` sees them."""
    port, token = DEFAULT_PORT, None
    for word in (cmdline or "").split():
        if word.startswith(PORT_ARG) and word[len(PORT_ARG) :].isdigit():
            port = int(word[len(PORT_ARG) :])
        elif word.startswith(TOKEN_ARG) and word[len(TOKEN_ARG) :]:
            token = word[len(TOKEN_ARG) :]
    return port, token


def runs_agent(cmdline: str | None) -> bool:
    """Whether a guest booted with ``cmdline`` runs firec's agent: ``init=`` a path ending
    in ``/firec-agent`` (an image firec built), or one of the agent's own arguments (a
    config with ``Builder.agent(...)``).

    >>> runs_agent("console=ttyS0 init=/sbin/firec-agent"), runs_agent("console=ttyS0")
    (True, False)
    """
    for word in (cmdline or "").split():
        if word.startswith("init=") and word.endswith("/firec-agent"):
            return True
        if word.startswith((TOKEN_ARG, PORT_ARG)):
            return True
    return False


def hide_token(text: str) -> str:
    """``text`` (a command line, a log line) with every agent token in it hidden.

    Firecracker logs the API requests it gets, ``PUT /boot-source`` with its
    command line included; firec hides the token from what it forwards,
    keeps and shows of those lines.

    >>> hide_token("console=ttyS0 firec.agent_token=s3cret")
    'console=ttyS0 firec.agent_token=***'
    """
    return _TOKEN_WORD.sub(TOKEN_ARG + "***", text) if TOKEN_ARG in text else text


def hide_tokens(data: Any) -> Any:
    """JSON-ready ``data`` with every agent token in it hidden: to print a record or a config.

    >>> record = {"agent": {"token": "s3cret"}, "kernel_args": "firec.agent_token=s3cret"}
    >>> hide_tokens(record)
    {'agent': {'token': '***'}, 'kernel_args': 'firec.agent_token=***'}
    """
    if isinstance(data, str):
        return hide_token(data)
    if isinstance(data, list | tuple):
        return [hide_tokens(item) for item in data]
    if isinstance(data, dict):
        hidden = {key: hide_tokens(value) for key, value in data.items()}
        agent = hidden.get("agent")
        if isinstance(agent, dict) and agent.get("token"):
            hidden["agent"] = {**agent, "token": "***"}
        return hidden
    return data
