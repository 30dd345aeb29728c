"""A Firecracker emulator for tests: no KVM, same command line, same HTTP API.

Run it as ``python -m firec.testing.emulator`` or ``firec-emulator`` with real
Firecracker's flags, plus ``--emulate-version 1.14`` (or the environment variable
``FIREC_EMULATOR_VERSION``; default 1.16) to pick the release it imitates. It
serves the API of that release on the Unix socket, with its status codes, error
messages and pre-/post-boot rules, and at ``InstanceStart`` plays firec's tiny
test guest (:mod:`firec.testing.guest`) on the serial console. It needs no
KVM; to play a host without it, set ``FIREC_KVM_DEVICE`` to a path the
emulator then opens at ``InstanceStart``, failing as Firecracker fails to
open ``/dev/kvm`` (firec's host checks look at the same path).

From Python, :class:`firec.testing.Emulator` spawns it on a temporary socket.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["main"]


def main() -> NoReturn:
    """Console entry point (``firec-emulator``)."""
    from firec.testing.emulator._cli import main as run

    run()
