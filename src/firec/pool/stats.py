"""What a pool tells about itself: :class:`PoolStats`, and the policy when it is empty.

Both flavours of the pool share these (no I/O here).

    >>> from firec.pool.stats import PoolStats
    >>> s = PoolStats(idle=2, restoring=1, handed_out=5, hits=4, misses=1, failures=0,
    ...               replaced=0, refill_latency=0.012, last_error=None)
    >>> s.hit_rate
    0.8
"""

from __future__ import annotations

import enum
import statistics
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["PoolStats", "WhenEmpty"]


class WhenEmpty(enum.StrEnum):
    """What :meth:`~firec.AsyncPool.acquire` does when no VM is ready."""

    #: Restore one now, for this caller (a cold restore: a miss).
    RESTORE = "restore"
    #: Wait until the refill has one ready (up to the acquire's timeout).
    WAIT = "wait"
    #: Raise :class:`~firec.errors.PoolEmptyError` at once.
    FAIL = "fail"


@dataclass(frozen=True)
class PoolStats:
    """A pool's figures at one moment.

    Attributes:
        idle: VMs ready to be handed out.
        restoring: VMs being restored (by the refill, or for a caller).
        handed_out: VMs handed out since the pool started.
        hits: acquires served by a ready VM.
        misses: acquires that found none (restored for the caller, waited, or failed).
        failures: restores that failed (the refill backs off and tries again).
        replaced: ready VMs found dead or not answering, deleted and replaced.
        refill_latency: the median seconds a restore took, over the last 100
            (``None`` before the first).
        last_error: the last restore failure, for people (``None`` if none).
    """

    idle: int
    restoring: int
    handed_out: int
    hits: int
    misses: int
    failures: int
    replaced: int
    refill_latency: float | None
    last_error: str | None

    @property
    def hit_rate(self) -> float | None:
        """The share of acquires a ready VM served (``None`` before the first)."""
        total = self.hits + self.misses
        return self.hits / total if total else None


class Counters:
    """The running figures behind :class:`PoolStats`, changed under a lock.

    A blocking :class:`~firec.pool.Pool` changes them from its callers'
    threads and its refill thread at once (``+=`` on an attribute is not
    atomic between threads).
    """

    def __init__(self) -> None:
        self.handed_out = self.hits = self.misses = self.failures = self.replaced = 0
        self.restoring = 0
        self.latencies: deque[float] = deque(maxlen=100)
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def failed(self, error: str) -> None:
        """Count a failed restore, and remember why."""
        with self._lock:
            self.failures += 1
            self.last_error = error

    def snapshot(self, idle: int) -> PoolStats:
        """The figures now, with the pool's ``idle`` count."""
        latencies = list(self.latencies)
        return PoolStats(
            idle=idle,
            restoring=self.restoring,
            handed_out=self.handed_out,
            hits=self.hits,
            misses=self.misses,
            failures=self.failures,
            replaced=self.replaced,
            refill_latency=statistics.median(latencies) if latencies else None,
            last_error=self.last_error,
        )
