"""What the blocking and the asyncio waits of the machines share, decided once.

The machine is written once, for asyncio (``_async/machine.py``), and
:class:`firec.Machine` is generated from it; every wait goes through
``io.<name>()``, and ``io`` is :mod:`firec.vm._async.io` in the source,
:mod:`firec.vm._sync.io` in the generated copy. Those two cannot be one
source: they are different primitives. The blocking ones park the calling
thread in ``select()`` on a pidfd or the inotify fd; the asyncio ones register
the fd with the event loop and await a future, so one loop runs any number of
microVMs without a thread each. What does not wait is the same for both, and
is here: how long a pause lasts, whether it only yields the CPU, whether it
can wait on inotify, and how a process to wait for is looked up.

Example::

    >>> plan_pause(0.0) == (MIN_PAUSE, None)
    True
    >>> plan_pause(1.0)[0]  # a long wait looks again every 10 ms
    0.01
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from firec.vm import _pathwatch
from firec.vm._reaping import exit_code

__all__ = ["MAX_PAUSE", "MIN_PAUSE", "PRIMITIVES", "YIELD_ONLY", "open_pidfd", "plan_pause"]

#: The names both ``io`` modules define, with the same meaning.
PRIMITIVES = (
    "drain",
    "gather",
    "pause",
    "run_blocking",
    "sleep",
    "vsock_connect",
    "vsock_listen",
    "wait_pid",
    "yield_cpu",
)

#: Seconds of a wait for a path during which ``pause`` only yields the CPU: a
#: VMM makes its socket ~0.5 ms after it starts, and a sleeping waiter is woken
#: late on a busy small host, while the starting VMM gets the CPU it is yielded.
YIELD_ONLY = 0.001
#: The shortest and the longest pause, in seconds.
MIN_PAUSE = 0.0002
MAX_PAUSE = 0.01


def plan_pause(
    waited: float, appears: Path | None = None
) -> tuple[float, _pathwatch.PathWatch | None] | None:
    """How to pause after ``waited`` seconds of waiting (for ``appears``, if given).

    ``None``: only yield the CPU (the first :data:`YIELD_ONLY` seconds of a
    wait for a path). Otherwise ``(delay, watch)``: wait up to ``delay``
    seconds, from 0.2 ms, growing with the wait up to 10 ms; never a busy
    loop, which on a small host would take the CPU from the Firecracker
    starting up. The wait ends early when an entry appears in ``appears``'
    directory, if ``watch`` (the process's inotify) is there to say so.
    """
    if appears is not None and waited < YIELD_ONLY:
        return None
    delay = min(max(waited / 4, MIN_PAUSE), MAX_PAUSE)
    return delay, (_pathwatch.shared() if appears is not None else None)


def open_pidfd(pid: int, popen: subprocess.Popen[bytes] | None = None) -> int | None:
    """A pidfd to wait on for process ``pid``, or ``None`` when it has exited already.

    ``popen``, when the process is our child, reads as done once it has
    exited (:func:`firec.vm._reaping.exit_code`: its ``returncode`` is set, and
    it is reaped on a thread of its own). The caller closes the pidfd.
    """
    if popen is not None and exit_code(popen) is not None:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        if popen is not None:
            exit_code(popen)
        return None
