"""Where firec keeps what outlives a process: two directories, for two different things.

* :func:`registry_dir`: the host registry (:mod:`firec.host.registry`), one
  record per microVM firec runs, naming its processes, files and network.
  ``$FIREC_STATE_DIR`` if set (``firec --state-dir`` too), else
  ``/run/firec/state`` for root. A record describes processes of the running
  boot and nothing else, so it lives on ``/run``, which every boot empties: no
  record outlives its VMs. This is what ``firec ls`` and ``firec gc`` read, for
  the VMs of the command line and of SDK programs alike.
* :func:`network_dir`: where a VM's network set-up keeps its records, its
  leases and the nft lock (:mod:`firec.network`) when ``Config.state_dir``
  does not name a directory: ``/var/lib/firec`` for root. This state must
  survive a reboot: leases are handed out round-robin from it, and a network
  record holds the CNI results with which a plugin's own on-disk address
  allocations are released. ``$FIREC_STATE_DIR`` does not move it (the command
  line, given a state directory, puts network state in its ``network/``
  subdirectory: :attr:`firec.host.registry.Registry.network_dir`).

Other users than root get ``$XDG_STATE_HOME/firec`` (an absolute
``XDG_STATE_HOME`` only, as the XDG specification asks), else
``~/.local/state/firec``, for both.

Their former names still work: ``firec.host.registry.state_dir`` is
:func:`registry_dir`, ``firec.vm.config.state_dir`` is :func:`network_dir`.

Example::

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"FIREC_STATE_DIR": "/tmp/firec-state"}):
    ...     print(registry_dir(), network_dir() == registry_dir())
    /tmp/firec-state False
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STATE_DIR_ENV", "default_registry_dir", "network_dir", "registry_dir"]

#: The environment variable that names the registry's directory.
STATE_DIR_ENV = "FIREC_STATE_DIR"


def _user_state_dir() -> Path:
    """``$XDG_STATE_HOME/firec``, or ``~/.local/state/firec``."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "firec"


def registry_dir() -> Path:
    """The host registry's directory: ``$FIREC_STATE_DIR``, else ``/run/firec/state`` for root.

    Other users: ``$XDG_STATE_HOME/firec`` or ``~/.local/state/firec``. See
    the module documentation for why.
    """
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    return default_registry_dir()


def default_registry_dir() -> Path:
    """:func:`registry_dir` when ``$FIREC_STATE_DIR`` is not set.

    The registry of the VMs whose network state is in :func:`network_dir` by
    default (command-line VMs without a state directory).
    """
    if os.geteuid() == 0:
        return Path("/run/firec/state")
    return _user_state_dir()


def network_dir() -> Path:
    """Where network set-ups keep records and leases by default: ``/var/lib/firec`` for root.

    Other users: ``$XDG_STATE_HOME/firec`` or ``~/.local/state/firec``.
    ``Config.state_dir`` overrides it per VM. See the module documentation
    for why it is not :func:`registry_dir`.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/firec")
    return _user_state_dir()
