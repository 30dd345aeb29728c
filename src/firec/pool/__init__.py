"""Pools of microVMs: booted ahead of time, handed out in a millisecond, never reused.

* :class:`Pool` / :class:`AsyncPool` (``_sync/pool.py`` is generated from
  ``_async/pool.py``): ``size`` microVMs restored from one snapshot and
  running, each handed out once by ``acquire()``, refilled in the background
  (one thread, or one task on the event loop, per pool), health-checked,
  within ``max_size`` and a memory budget; :meth:`AsyncPool.from_config`
  boots a VM once, waits until it is ready, snapshots it and pools that;
* :class:`PoolStats`: size, hits, misses, refill latency, failures;
  :class:`WhenEmpty`: what ``acquire()`` does when no VM is ready.

Forking a running VM (its children restored from its state now, while it runs
on) is :meth:`firec.Machine.fork`.

Example::

    >>> import firec
    >>> pool = firec.Pool("/srv/snaps/base", size=4)   # doctest: +SKIP
    >>> with pool:                                    # doctest: +SKIP
    ...     with pool.acquire() as vm:
    ...         vm.exec(["echo", "hi"]).stdout
    b'hi\\n'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.pool._async.pool import AsyncPool
    from firec.pool._sync.pool import Pool
    from firec.pool.stats import PoolStats, WhenEmpty

__all__ = ["AsyncPool", "Pool", "PoolStats", "WhenEmpty"]

_HOMES = {
    "AsyncPool": "firec.pool._async.pool",
    "Pool": "firec.pool._sync.pool",
    "PoolStats": "firec.pool.stats",
    "WhenEmpty": "firec.pool.stats",
}

__getattr__, __dir__ = lazy_door(__name__, _HOMES, ())
