"""Waking up when a file appears: one inotify instance for the whole process.

A VMM creates its API socket about half a millisecond after it starts.
Polling for it costs either latency (asyncio cannot sleep less than a
millisecond) or CPU (which a small host's starting Firecracker needs).
Instead, :func:`shared` gives the process's one :class:`PathWatch`: waiters
register a callback for a directory, and any entry created in it (or moved
into it) calls the callbacks, which then look at the path themselves.

The inotify instance is opened once and never closed: closing one waits for
an SRCU grace period in the kernel (up to ~15 ms here), which no boot should
pay. Watches are added and removed per wait (tens of microseconds).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["PathWatch", "shared"]

Wake = Callable[[], object]

_shared: PathWatch | None = None
_shared_failed = False
_shared_lock = threading.Lock()


class PathWatch:
    """Call registered callbacks when entries appear in watched directories.

    Example::

        watch = PathWatch()
        token = watch.watch("/run/vm", lambda: print("something appeared"))
        ...  # poll or select on watch.fileno(); when readable:
        watch.pump()
        watch.unwatch(token)
    """

    def __init__(self) -> None:
        from inotify_simple import INotify, flags

        self._inotify: Any = INotify(nonblocking=True)
        self._mask = flags.CREATE | flags.MOVED_TO
        self._ignored = flags.IGNORED
        self._lock = threading.Lock()
        self._wakes: dict[int, dict[int, Wake]] = {}  # wd -> token -> callback
        self._token_wd: dict[int, int] = {}
        self._next_token = 0
        self._readers: dict[Any, int] = {}  # asyncio loop -> waits using it

    def fileno(self) -> int:
        """The inotify fd: readable when :meth:`pump` has something to deliver."""
        return int(self._inotify.fileno())

    def watch(self, directory: str | os.PathLike[str], wake: Wake) -> int | None:
        """Call ``wake`` (from whichever thread pumps) when an entry appears in ``directory``.

        Returns a token for :meth:`unwatch`, or None if the directory cannot be
        watched (missing, unreadable): the caller then simply polls.
        """
        with self._lock:
            try:
                wd = int(self._inotify.add_watch(os.fspath(directory), self._mask))
            except OSError:
                return None
            token = self._next_token
            self._next_token += 1
            self._wakes.setdefault(wd, {})[token] = wake
            self._token_wd[token] = wd
            return token

    def unwatch(self, token: int) -> None:
        """Stop calling the callback of ``token``; the last one of a directory removes its watch."""
        with self._lock:
            wd = self._token_wd.pop(token, None)
            if wd is None:
                return
            wakes = self._wakes.get(wd)
            if wakes is None:
                return
            wakes.pop(token, None)
            if not wakes:
                del self._wakes[wd]
                # OSError: the directory is gone, the kernel removed the watch itself
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(wd)

    def pump(self) -> None:
        """Read what the kernel queued and call the callbacks of the directories concerned."""
        called: list[Wake] = []
        with self._lock:
            try:
                events = list(self._inotify.read(timeout=0))
            except OSError:
                events = []
            for event in events:
                wakes = self._wakes.get(event.wd)
                if wakes is None:
                    continue
                called.extend(wakes.values())
                if event.mask & self._ignored:  # directory removed: its wd is dead
                    del self._wakes[event.wd]
        for wake in called:
            wake()

    def reader_added(self, loop: Any) -> bool:
        """Count one more asyncio wait on ``loop``; True for the first (add the reader)."""
        count = self._readers.get(loop, 0)
        self._readers[loop] = count + 1
        return count == 0

    def reader_removed(self, loop: Any) -> bool:
        """Count one wait less on ``loop``; True for the last (remove the reader)."""
        count = self._readers.pop(loop) - 1
        if count:
            self._readers[loop] = count
        return count == 0


def _forget_in_child() -> None:
    """A forked child gets its own instance: events read by one process are lost to the other."""
    global _shared
    if _shared is not None:
        _shared._inotify.close()  # the parent still holds it: no grace period to wait for
        _shared = None


os.register_at_fork(after_in_child=_forget_in_child)


def shared() -> PathWatch | None:
    """The process's :class:`PathWatch`, made on first use; None where inotify is unavailable."""
    global _shared, _shared_failed
    if _shared is not None or _shared_failed:
        return _shared
    with _shared_lock:
        if _shared is None and not _shared_failed:
            try:
                _shared = PathWatch()
            except (OSError, ImportError):
                _shared_failed = True
    return _shared
