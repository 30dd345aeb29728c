"""The emulator's command line: its own flags, then Firecracker's (``main``).

:func:`main` takes the emulator's flags off the command line
(``--emulate-version``, ``--emulate-slow-stop``, and the jailer emulator's
``--emulate-chroot`` and ``--emulate-user``), enters the emulated jail, and
runs the rest as Firecracker's command line (:class:`._process.Process`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from . import _jail
from ._process import Process
from ._release import parse_release

__all__ = ["main"]

EMULATE_FLAG = "--emulate-version"
#: The emulator's flag for a slow stop (seconds; see :class:`._main_loop.MainLoop`).
SLOW_STOP_FLAG = "--emulate-slow-stop"


def _take(args: list[str], flag: str, what: str) -> str | None:
    """Remove ``flag VALUE`` from ``args`` and return VALUE (exit 153 when it is missing)."""
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        sys.stderr.write(f"firec-emulator: {flag} needs {what}\n")
        raise SystemExit(153)
    value = args[i + 1]
    del args[i : i + 2]
    return value


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the emulator with Firecracker's command line.

    Plus the emulator's own flags: ``--emulate-version``, ``--emulate-slow-stop
    SECONDS`` (a stop whose deadlock window lasts that long, see
    :class:`._main_loop.MainLoop`), and the jailer emulator's
    ``--emulate-chroot`` and ``--emulate-user`` (see :mod:`._jail`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    wanted = _take(args, EMULATE_FLAG, "a version such as 1.14")
    slow_stop_text = _take(args, SLOW_STOP_FLAG, "seconds")
    root = _take(args, _jail.CHROOT_FLAG, "a directory")
    user_text = _take(args, _jail.USER_FLAG, "UID:GID")
    try:
        rel = parse_release(wanted)
        user = _jail.parse_user(user_text) if user_text is not None else None
        slow_stop = float(slow_stop_text) if slow_stop_text is not None else 0.0
    except ValueError as exc:
        sys.stderr.write(f"firec-emulator: {exc}\n")
        raise SystemExit(153) from None
    try:
        _jail.enter(root, user)
    except OSError as exc:
        sys.stderr.write(f"firec-emulator: cannot enter the emulated jail {root}: {exc}\n")
        raise SystemExit(1) from None
    Process(rel, slow_stop=slow_stop).run(args)
