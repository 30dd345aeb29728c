"""When a transport stops waiting for an answer: the decisions, without the waiting.

A transport with a :class:`RequestWatch` (which :class:`firec.Machine` sets
to its VMM's :class:`~firec.vm.process.ExitWatch`) waits for an answer in
steps of at most ``watch.interval`` seconds and, after each step that brought
nothing, asks :func:`give_up_if_told` whether the read timed out or the watch
says no answer will come. The blocking transport waits with a socket timeout,
the asyncio one with a timer on its loop; both take their step lengths from
:func:`next_wait`, so they give up at the same moments for the same reasons.

Example::

    >>> class Exited:
    ...     interval = 0.05
    ...     def check(self) -> str | None:
    ...         return "the VMM exited"
    >>> next_wait(None, Exited())
    0.05
    >>> give_up_if_told(None, Exited())
    Traceback (most recent call last):
    ...
    firec.api._watch.RequestAbandoned: gave up waiting for the answer: the VMM exited
"""

from __future__ import annotations

import time
from typing import Protocol

import httpx

__all__ = ["RequestAbandoned", "RequestWatch", "deadline", "give_up_if_told", "next_wait"]


class RequestWatch(Protocol):
    """Says when to stop waiting for an answer (see :attr:`UnixSocketTransport.watch`)."""

    #: Seconds between two calls of :meth:`check` while an answer is awaited.
    interval: float

    def check(self) -> str | None:
        """Why no answer will ever come (the request is then given up), or ``None``."""


class RequestAbandoned(httpx.ReadError):
    """The transport stopped waiting for an answer: its watch said none would come."""


def deadline(timeout: float | None) -> float | None:
    """The :func:`time.monotonic` time ``timeout`` seconds from now (``None``: never)."""
    return None if timeout is None else time.monotonic() + timeout


def next_wait(deadline: float | None, watch: RequestWatch | None) -> float | None:
    """Seconds to wait before the next look: until ``deadline``, at most ``watch.interval``."""
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if watch is None:
        return left
    return watch.interval if left is None else min(left, watch.interval)


def give_up_if_told(deadline: float | None, watch: RequestWatch | None) -> None:
    """After a wait without an answer: the read timed out, or the watch says why not."""
    if deadline is not None and time.monotonic() >= deadline:
        raise httpx.ReadTimeout("timed out waiting for the response")
    reason = watch.check() if watch is not None else None
    if reason is not None:
        raise RequestAbandoned(f"gave up waiting for the answer: {reason}")
