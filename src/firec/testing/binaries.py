"""Executables that stand in for ``firecracker`` and ``jailer``.

Anything that runs a Firecracker binary by path (firec's own ``Config``,
your scripts, other tools) can run firec's emulator instead:
:func:`emulator_binary` returns the path of a small executable that starts it
with this Python interpreter. :func:`jailer_emulator_binary` does the same for
firec's jailer emulator (:mod:`firec.testing.jailer`), which runs the emulator
as if jailed (give it :func:`emulator_binary` as the exec file).

Example::

    import firec
    from firec.testing import emulator_binary
    from firec.testing.guest import build_test_guest

    config = (
        firec.Config.builder(None, build_test_guest())
        .firecracker_binary(emulator_binary())
        .build()
    )
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["emulator_binary", "jailer_emulator_binary"]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "firec" / "bin"


def _wrapper(name: str, module: str) -> Path:
    """An executable ``name`` that runs ``python -m module "$@"`` with this interpreter."""
    script = f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n'
    key = hashlib.sha256(script.encode()).hexdigest()[:12]
    path = _cache_dir() / key / name
    if path.is_file() and path.read_text() == script:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(script)
    os.chmod(handle.name, 0o755)
    os.replace(handle.name, path)  # atomic: concurrent callers never see half a file
    return path


def emulator_binary() -> Path:
    """The path of an executable that runs firec's Firecracker emulator.

    It takes Firecracker's own flags (``--api-sock``, ``--config-file``...)
    and ``--emulate-version``.
    """
    return _wrapper("firecracker-emulator", "firec.testing.emulator")


def jailer_emulator_binary() -> Path:
    """The path of an executable that runs firec's jailer emulator.

    It takes the jailer's flags; its ``--exec-file`` must be
    :func:`emulator_binary` (or another executable running firec's emulator).
    """
    return _wrapper("jailer-emulator", "firec.testing.jailer")
