"""Exclusive ``flock`` locks on lock files, taken directly: what :class:`firec._jsonfile.Lock` uses.

firec's records are changed under a lock file beside them (``<name>.lock``),
locked whole with ``flock(LOCK_EX)``, as :mod:`filelock` locks it: a firec
that takes these locks and one that takes them through :mod:`filelock` (an
older firec, or :mod:`filelock` used on the same file) exclude each other.
Taken here directly, a lock and its release cost ~50 us; :class:`filelock.FileLock`
spends ~0.5 ms on its own bookkeeping around the same system calls, twice
per VM a host record claims and releases, on the boot path.

A lock file may be removed while someone holds it (a VM's lock goes with its
record). Whoever then gets the lock on the removed file would hold nothing
that the next process sees: :func:`acquire` checks, once it holds the lock,
that the file it locked is still the one at the path, and starts again on
the file now there otherwise.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "vm-1.lock"
    >>> fd = acquire(path, timeout=5.0)       # Timeout after 5 s of waiting
    >>> acquire(path, timeout=0)              # one try: held, by the fd above
    Traceback (most recent call last):
    ...
    firec._lockfile.Timeout: .../vm-1.lock: another process held the lock for more than 0s
    >>> release(fd)
    >>> release(acquire(path, timeout=0))     # free again
    >>> path.unlink(); path.parent.rmdir()
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

__all__ = ["Timeout", "acquire", "release"]

#: Seconds between two tries while another process holds the lock: at first, and at most.
FIRST_DELAY = 0.0005
LONGEST_DELAY = 0.05

#: What ``flock`` says when another file description holds the lock (EACCES on some
#: file systems).
_HELD = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


class Timeout(TimeoutError):  # (the name filelock gives it too)
    """Another process held the lock for the whole time the caller would wait.

    Attributes:
        path: the lock file.
        timeout: how long the caller waited, in seconds.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        super().__init__(f"{self.path}: another process held the lock for more than {timeout:g}s")


def acquire(
    path: str | os.PathLike[str], timeout: float, *, mode: int = 0o600, create: bool = True
) -> int:
    """Lock ``path``, made with ``mode`` if it is missing (unless ``create`` is false).

    Waits ``timeout`` seconds at most (``0``: one try; negative: forever).
    Returns the fd that holds the lock: :func:`release` gives it back.

    Raises:
        Timeout: another process held it for ``timeout`` seconds.
        FileNotFoundError: its directory is missing; or ``create`` is false and
            the file is missing (or was removed while waiting).
        OSError: the file cannot be opened or locked.
    """
    deadline = None if timeout < 0 else time.monotonic() + timeout
    delay = FIRST_DELAY
    while True:
        fd = _open(path, mode, create)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _HELD:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(path, timeout) from None
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_DELAY)
            continue
        try:
            held = _held_at(path, fd, mode)
        except BaseException:
            os.close(fd)
            raise
        if held:
            return fd
        os.close(fd)  # removed or replaced while we waited: lock the file there now
        if not create:
            raise FileNotFoundError(errno.ENOENT, "the lock file was removed", os.fspath(path))


def release(fd: int) -> None:
    """Give the lock back (closing the fd :func:`acquire` returned)."""
    os.close(fd)


def _open(path: str | os.PathLike[str], mode: int, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, mode)
    except PermissionError:  # another user's lock file: a read-only fd locks it as well
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)


def _held_at(path: str | os.PathLike[str], fd: int, mode: int) -> bool:
    """Whether the file locked through ``fd`` is still the one at ``path`` (given ``mode``)."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    if (there.st_ino, there.st_dev) != (held.st_ino, held.st_dev):
        return False
    if held.st_mode & 0o777 != mode and held.st_uid == os.geteuid():
        os.fchmod(fd, mode)  # as asked, whatever the umask was when it was made
    return True
