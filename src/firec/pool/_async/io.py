"""What :class:`firec.AsyncPool` waits with: asyncio, on the running event loop.

Written by hand, like :mod:`firec.pool._sync.io` (the pool itself is written
once, in ``_async/pool.py``, and generated for :class:`firec.Pool`): a pool's
refill runs as one task on the loop here, where the blocking pool runs it in
one thread. The names, and what they mean, are the same in both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Background", "Signal", "background", "call"]


class Signal:
    """A flag one side sets and the other waits for (an :class:`asyncio.Event`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Set it, waking whoever waits."""
        self._event.set()

    def clear(self) -> None:
        """Clear it: the next :meth:`wait` waits."""
        self._event.clear()

    def is_set(self) -> bool:
        """Whether it is set."""
        return self._event.is_set()

    async def wait(self, timeout: float | None) -> bool:
        """Wait until it is set, ``timeout`` seconds at most; whether it was."""
        if self._event.is_set():
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


class Background:
    """Work running beside the caller: a task on the event loop."""

    def __init__(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        coroutine: Coroutine[Any, Any, None] = work()  # type: ignore[assignment]
        self._task = asyncio.get_running_loop().create_task(coroutine, name=name)

    async def join(self) -> None:
        """Wait until the work has ended (it ends by itself: tell it to first)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def done(self) -> bool:
        """Whether the work has ended."""
        return self._task.done()


def background(work: Callable[[], Awaitable[None]], name: str) -> Background:
    """Start ``work`` beside the caller (a task of the running loop)."""
    return Background(work, name)


async def call(hook: Callable[..., Any], *args: Any) -> Any:
    """Call a caller's hook, awaiting what it returns when that is awaitable."""
    result = hook(*args)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result
