"""Where the ``firec-agent`` binary is: built with firec, found at run time.

The build (``pip install .``, ``pip install -e .``, a wheel) compiles the
agent from ``agent/`` in the source tree into ``firec/agent/bin/``, for the
build machine's architecture (x86_64 in firec's wheels).
:func:`agent_binary` finds it; ``FIREC_AGENT_BIN`` names another one.

Example::

    >>> from firec.agent import agent_binary
    >>> agent_binary().name
    'firec-agent'
"""

from __future__ import annotations

import os
from pathlib import Path

from firec.errors import FirecError

__all__ = ["AGENT_BIN_ENV", "agent_binary"]

#: The environment variable naming a firec-agent binary to use instead of firec's own.
AGENT_BIN_ENV = "FIREC_AGENT_BIN"

_BUILT = Path(__file__).resolve().parent / "bin" / "firec-agent"


def agent_binary() -> Path:
    """The path of the ``firec-agent`` binary (``FIREC_AGENT_BIN``, else the one built with firec).

    Raises :class:`~firec.errors.FirecError` saying how to get one when
    there is none.
    """
    given = os.environ.get(AGENT_BIN_ENV)
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FirecError(f"{AGENT_BIN_ENV}={given}: no executable firec-agent there")
        return path
    if _BUILT.is_file() and os.access(_BUILT, os.X_OK):
        return _BUILT
    raise FirecError(
        f"firec-agent is not built ({_BUILT} is missing): it is compiled when firec is installed "
        "from source (pip install . or pip install -e .), which needs musl-tools or gcc "
        f"(apt-get install musl-tools gcc); or set {AGENT_BIN_ENV} to a firec-agent binary"
    )
