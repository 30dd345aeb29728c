"""A child VMM's exit status, read without reaping it on the caller's thread.

Reaping an exited child (``wait4``) is when the kernel releases its task, and
with it the ``/proc`` entries of its pid (``release_task`` ->
``proc_flush_pid`` -> ``shrink_dcache_parent``). That usually takes
microseconds, but on a busy host it was caught taking 1.7 and 2.1 seconds,
in two processes at once: a ``delete`` waiting for it waited that long (and,
before the reap left the event loop, every VM of that loop with it).

:func:`exit_code` therefore reads the status of an exited child with
``waitid(WNOWAIT)``, which leaves it a zombie, marks its
:class:`subprocess.Popen` done with that code (so that ``poll()`` and
``wait()`` never touch the pid again), and hands the zombie to one reaper
thread, which reaps it through a pidfd (so a reused pid can never be reaped
by mistake). The caller goes on at once; the VMM's memory and devices were
freed when it exited, before it became a zombie.

Example::

    >>> import subprocess
    >>> child = subprocess.Popen(["sh", "-c", "exit 3"])
    >>> _ = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # it has exited
    >>> exit_code(child), child.poll()
    (3, 3)
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading

__all__ = ["exit_code"]

_lock = threading.Lock()
_zombies: queue.SimpleQueue[int] = queue.SimpleQueue()
_reaper: threading.Thread | None = None


def exit_code(popen: subprocess.Popen[bytes]) -> int | None:
    """``popen``'s return code once its process has exited, ``None`` while it runs.

    Never reaps on the calling thread (see the module's documentation): an
    exited process is reaped soon after by the reaper thread, and ``popen``
    reads as done (``returncode`` set) from this call on.
    """
    with _lock:
        if popen.returncode is not None:
            return popen.returncode
        try:
            info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by another waiter of this process's children
            return popen.poll()
        if info is None:
            return None
        try:
            pidfd = os.pidfd_open(popen.pid)
        except ProcessLookupError:  # reaped by another waiter just now
            return popen.poll()
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        popen.returncode = code
        _reap_later(pidfd)
        return code


def _reap_later(pidfd: int) -> None:
    """Give the zombie behind ``pidfd`` to the reaper thread (started when first needed)."""
    global _reaper
    _zombies.put(pidfd)
    if _reaper is None or not _reaper.is_alive():  # not started yet, or lost in a fork
        _reaper = threading.Thread(target=_reap_forever, name="firec-reaper", daemon=True)
        _reaper.start()


def _reap_forever() -> None:
    while True:
        pidfd = _zombies.get()
        _reap(pidfd)  # looked up now, not before the wait: tests hold it back


def _reap(pidfd: int) -> None:
    """Reap the zombie behind ``pidfd`` (the kernel releases it: see the module's documentation)."""
    try:
        with contextlib.suppress(ChildProcessError):  # reaped by another waiter
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    finally:
        os.close(pidfd)
