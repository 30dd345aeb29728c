"""The waiting primitives of :class:`firec.Machine`: blocking twins of ``_async_io``."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .streams import LineReader

__all__ = ["drain", "run_blocking", "sleep", "wait_pid"]

P = ParamSpec("P")
T = TypeVar("T")


def sleep(seconds: float) -> None:
    """Wait ``seconds``."""
    time.sleep(seconds)


def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run slow file work (copying a disk image)."""
    return func(*args, **kwargs)


def wait_pid(pid: int, timeout: float | None, popen: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until process ``pid`` has exited; ``False`` if ``timeout`` passed first.

    ``popen``, when the process is our child, is reaped so that its
    ``returncode`` is set.
    """
    if popen is not None:
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def drain(reader: LineReader, timeout: float) -> None:
    """Give ``reader`` up to ``timeout`` seconds to deliver what is left in its pipe."""
    reader.wait(timeout)
