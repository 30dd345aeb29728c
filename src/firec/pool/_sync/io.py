"""What :class:`firec.Pool` waits with: threads, blocking the caller.

Written by hand, like :mod:`firec.pool._async.io` (the pool itself is written
once, in ``_async/pool.py``, and generated for :class:`firec.Pool`): a pool's
refill runs in one thread here (one per pool, never one per VM), where the
asyncio pool runs it as a task on the loop. The names, and what they mean,
are the same in both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Background", "Signal", "background", "call"]


class Signal:
    """A flag one side sets and the other waits for (a :class:`threading.Event`)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Set it, waking whoever waits."""
        self._event.set()

    def clear(self) -> None:
        """Clear it: the next :meth:`wait` waits."""
        self._event.clear()

    def is_set(self) -> bool:
        """Whether it is set."""
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Wait until it is set, ``timeout`` seconds at most; whether it was."""
        return self._event.wait(timeout)


class Background:
    """Work running beside the caller: a daemon thread."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=work, name=name, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait until the work has ended (it ends by itself: tell it to first)."""
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def done(self) -> bool:
        """Whether the work has ended."""
        return not self._thread.is_alive()


def background(work: Callable[[], None], name: str) -> Background:
    """Start ``work`` beside the caller (a thread of its own)."""
    return Background(work, name)


def call(hook: Callable[..., Any], *args: Any) -> Any:
    """Call a caller's hook."""
    return hook(*args)
