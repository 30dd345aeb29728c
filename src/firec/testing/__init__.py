"""Test helpers for firec: a tiny guest kernel, a Firecracker emulator and a jailer emulator.

* :mod:`firec.testing.guest`: firec's tiny test guest (built with the host's C compiler).
* :class:`Emulator` (from :mod:`firec.testing.emulator`): a Firecracker stand-in
  that needs no KVM, started on a private socket::

      from firec.testing import Emulator

      with Emulator(version="1.14") as emu:
          ...  # talk to emu.socket_path

* :mod:`firec.testing.jailer`: a stand-in for Firecracker's jailer, which runs
  the emulator as if jailed.
* :mod:`firec.testing.binaries`: executables that run either emulator, for
  anything that wants a ``firecracker`` or ``jailer`` path
  (:func:`emulator_binary` is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firec.testing.emulator._spawn import Emulator

__all__ = ["Emulator", "emulator_binary", "guest"]


def emulator_binary() -> Path:
    """The path of an executable that runs firec's Firecracker emulator (see :mod:`.binaries`)."""
    from firec.testing.binaries import emulator_binary as find

    return find()


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from firec.testing.emulator._spawn import Emulator

        return Emulator
    if name == "guest":
        import importlib

        return importlib.import_module("firec.testing.guest")
    raise AttributeError(name)
