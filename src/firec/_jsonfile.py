"""firec's JSON records: stamped with their format, never half-written, changed under a lock.

firec keeps what must outlive a process in small JSON files: VM records (the
host registry), network set-up records, leases, snapshot manifests. Every one
goes through this module:

* each record carries its :class:`Format` (``"format": "firec-vm/1"``; a
  snapshot manifest, ``"manifest_version": 1``), stamped on every write and
  checked on every read: a record of an unknown newer format is refused
  (:class:`NewerFormatError`, naming the file and both formats), never misread;
* :func:`write` replaces a file in one step (a temporary file beside it, then
  ``rename``), optionally ``fsync``-ed so that it survives a power loss;
* :func:`create` makes a file that must not exist yet, with its content, in
  one step (``link``): a second process, or a retry after a crash, finds
  either nothing or the whole record, never an empty file;
* :func:`read` reads one back, checking its format;
* :func:`update` is a read-modify-write under the record's lock file
  (``<name>.lock`` beside it, :class:`Lock`), which every firec process honours.

A write that fails (a full disk, a read-only directory) leaves nothing behind
and raises :class:`~firec.errors.StateError` naming the file and the reason.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "counter.json"
    >>> COUNTER = Format("firec-counter", 1)
    >>> create(path, {"count": 0}, COUNTER)          # FileExistsError if it is there
    >>> with update(path, COUNTER, new=dict) as data:
    ...     data["count"] += 1                         # written when the block ends
    >>> read(path, COUNTER)
    {'count': 1, 'format': 'firec-counter/1'}
    >>> read(path, Format("firec-counter", 0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    firec._jsonfile.NewerFormatError: cannot write or read firec's state file \
.../counter.json: it is in format firec-counter/1, newer than this firec reads \
(firec-counter/0): use a newer firec
    >>> import shutil; shutil.rmtree(path.parent)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firec import _lockfile
from firec.errors import StateError

__all__ = [
    "Format",
    "FormatError",
    "Lock",
    "LockTimeout",
    "NewerFormatError",
    "create",
    "read",
    "update",
    "write",
]

#: Seconds :func:`update` waits for another process's lock by default.
LOCK_TIMEOUT = 30.0

_VERSION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Format:
    """The kind of a record and the version of its layout, stamped in every record.

    Under the ``"format"`` key (the default) the stamp is ``"<kind>/<version>"``;
    under any other key (the snapshot manifest's ``"manifest_version"``) it is
    the bare version number.

    >>> Format("firec-vm", 1).stamp
    'firec-vm/1'
    >>> Format("firec snapshot manifest", 1, key="manifest_version").stamp
    1
    """

    kind: str
    version: int
    key: str = "format"

    @property
    def stamp(self) -> str | int:
        """What a record of this format holds under :attr:`key`."""
        return f"{self.kind}/{self.version}" if self.key == "format" else self.version

    def describe(self, version: int) -> str:
        """This kind at ``version``, for people (``firec-vm/2``)."""
        if self.key == "format":
            return f"{self.kind}/{version}"
        return f"{self.kind} ({self.key} {version})"

    def __str__(self) -> str:
        return self.describe(self.version)

    def version_of(self, data: object) -> int | None:
        """The version ``data`` is stamped with, if it is a record of this kind at all."""
        if not isinstance(data, dict):
            return None
        stamp = data.get(self.key)
        if self.key != "format":
            return stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None
        if not isinstance(stamp, str):
            return None
        kind, _, number = stamp.rpartition("/")
        return int(number) if kind == self.kind and _VERSION.fullmatch(number) else None

    def check(self, path: Path, data: object) -> dict[str, Any]:
        """``data`` if it is a record of this format.

        Raises:
            NewerFormatError: it is a record of this kind in a newer version.
            FormatError: it is anything else.
        """
        found = self.version_of(data)
        if found is None:
            raise FormatError(path, f"not a {self} record")
        if found > self.version:
            raise NewerFormatError(path, self.describe(found), str(self))
        if found < self.version:
            raise FormatError(
                path, f"a {self.describe(found)} record, which this firec does not read ({self})"
            )
        assert isinstance(data, dict)
        return data


class FormatError(StateError):
    """A file is not a record of the expected format (not JSON, another kind, an old version)."""


class NewerFormatError(FormatError):
    """A record was written in a newer format than this firec reads.

    Attributes:
        found: its format (``firec-vm/2``).
        supported: the format this firec reads (``firec-vm/1``).
    """

    def __init__(self, path: str | os.PathLike[str], found: str, supported: str) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            path,
            f"it is in format {found}, newer than this firec reads ({supported}): "
            "use a newer firec",
        )


class LockTimeout(StateError):
    """Another process held a record's lock for longer than the caller would wait.

    Attributes:
        lock_file: the lock file.
        timeout: how long the caller waited, in seconds.
    """

    def __init__(self, lock_file: Path, timeout: float) -> None:
        self.lock_file = lock_file
        self.timeout = timeout
        super().__init__(lock_file, f"another process held it for more than {timeout:g}s")


class Lock:
    """The lock of the record at ``path``: the file ``<name>.lock`` beside it.

    An advisory lock (``flock`` on the whole file, taken by :mod:`firec._lockfile`
    as :mod:`filelock` takes it) that every firec process takes before changing
    the record. Within a process, the lock is held per thread: a thread that
    holds it may acquire it again through the same object (nested uses do not
    wait; the lock is given back when the outermost use ends), while other
    threads wait for it as other processes do. Its directory must exist.
    """

    def __init__(self, path: Path, *, mode: int = 0o600) -> None:
        self.file = path.with_suffix(".lock")
        self._mode = mode
        self._held = threading.local()  # this thread's fd and depth of nested uses

    def acquire(self, timeout: float = LOCK_TIMEOUT) -> None:
        """Take the lock, waiting ``timeout`` seconds at most (``-1``: forever).

        Raises:
            LockTimeout: another process (or thread) held it all that time.
            FileNotFoundError: the lock's directory is missing.
        """
        held = self._held
        depth: int = getattr(held, "depth", 0)
        if depth:
            held.depth = depth + 1
            return
        try:
            held.fd = _lockfile.acquire(self.file, timeout, mode=self._mode)
        except _lockfile.Timeout:
            raise LockTimeout(self.file, timeout) from None
        held.depth = 1

    def release(self) -> None:
        """Give the lock back (once the outermost use in this thread ends)."""
        held = self._held
        depth: int = getattr(held, "depth", 0)
        if depth <= 0:
            raise RuntimeError(f"the lock {self.file} is not held by this thread")
        held.depth = depth - 1
        if depth == 1:
            fd, held.fd = held.fd, -1
            _lockfile.release(fd)

    @contextlib.contextmanager
    def held(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the lock for a ``with`` block (see :meth:`acquire`)."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()


def _dump(data: Mapping[str, Any]) -> bytes:
    # one line: json's C encoder (an indented dump is Python's, ~4x slower on a VM record)
    return (json.dumps(data, sort_keys=True) + "\n").encode()


def _stamped(data: Mapping[str, Any], record_format: Format) -> dict[str, Any]:
    return {**data, record_format.key: record_format.stamp}


def _sync_directory(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The numbers of this process's temporary files (names: ``.<name>.<pid>.<n>``).
_names = itertools.count()


def _open_temporary(path: Path, mode: int) -> tuple[int, str]:
    """A new temporary file beside ``path``, with ``mode`` (whatever the umask): its fd and name.

    The directory is made (0700) only when it is missing: a ``mkdir`` per
    write would cost as much as the write (a VM's record is written twice
    on the boot path).
    """
    directory, name = os.path.split(os.fspath(path))  # (pathlib's parts cost more)
    prefix = os.path.join(directory, f".{name}.{os.getpid()}.")
    made_directory = False
    for _ in range(100):  # a name that a dead process with our pid left is skipped
        tmp = f"{prefix}{next(_names)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        except FileNotFoundError as exc:
            if made_directory:
                raise StateError(path, exc) from exc
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StateError(path, exc) from exc
            made_directory = True
            continue
        except OSError as exc:
            raise StateError(path, exc) from exc
        try:
            os.fchmod(fd, mode)  # (the umask may have taken bits off)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateError(path, exc) from exc
        return fd, tmp
    raise StateError(path, f"no free name for a temporary file beside it ({prefix}*)")


def _temporary(path: Path, data: Mapping[str, Any], mode: int, fsync: bool) -> str:
    """Write ``data`` into a new temporary file beside ``path``, with ``mode``; its name."""
    content = _dump(data)
    fd, tmp = _open_temporary(path, mode)
    try:
        try:
            written = os.write(fd, content)  # the whole record, but for a signal or a full disk
            if written < len(content):
                view = memoryview(content)[written:]
                while view:
                    view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write(
    path: Path,
    data: Mapping[str, Any],
    record_format: Format,
    *,
    mode: int = 0o600,
    fsync: bool = False,
) -> None:
    """Replace ``path`` with ``data``, stamped with ``record_format``, in one step.

    ``fsync`` also flushes the file and its directory to the disk before
    returning (for what must survive a power loss, not only a crash).

    Raises:
        StateError: it could not be written (the previous content is kept).
    """
    tmp = _temporary(path, _stamped(data, record_format), mode, fsync)
    try:
        os.replace(tmp, path)
        if fsync:
            _sync_directory(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(path, exc) from exc


def create(
    path: Path,
    data: Mapping[str, Any],
    record_format: Format,
    *,
    mode: int = 0o600,
    fsync: bool = False,
) -> None:
    """Make ``path`` with ``data``, stamped with ``record_format``, in one step, unless it exists.

    Raises:
        FileExistsError: ``path`` is already there (it is left as it was).
        StateError: it could not be written (nothing is left behind).
    """
    tmp = _temporary(path, _stamped(data, record_format), mode, fsync)
    try:
        os.link(tmp, path)
        if fsync:
            _sync_directory(path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StateError(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read(path: Path, record_format: Format) -> dict[str, Any] | None:
    """The record in ``path`` (``None`` when there is no such file).

    Raises:
        NewerFormatError: it is in a newer format than ``record_format``.
        FormatError: it is not a ``record_format`` record (or not JSON).
        StateError: it cannot be read.
    """
    try:  # os.open and os.read: half the time of a file object (release reads a record)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(path, exc) from exc
    try:
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(path, exc) from exc
    text = b"".join(chunks)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FormatError(path, f"not JSON ({exc})") from exc
    return record_format.check(path, data)


@contextlib.contextmanager
def update(
    path: Path,
    record_format: Format,
    *,
    new: Callable[[], dict[str, Any]],
    lock: Lock | None = None,
    timeout: float = LOCK_TIMEOUT,
    mode: int = 0o600,
    fsync: bool = False,
) -> Iterator[dict[str, Any]]:
    """Read-modify-write ``path`` under its lock: the ``with`` block changes the record.

    Yields the record as read (``new()`` when there is none yet); when the
    block ends, the record is written back (see :func:`write`) if the block
    changed it, and left alone if not, or if the block raised. ``lock`` is the
    :class:`Lock` to hold (default: a new one for ``path``); its directory
    must exist.

    Raises:
        LockTimeout: another process held the lock for more than ``timeout`` seconds.
        FormatError, StateError: as :func:`read` and :func:`write` raise them.
    """
    lock = lock if lock is not None else Lock(path)
    with lock.held(timeout):
        data = read(path, record_format)
        if data is None:
            data = _stamped(new(), record_format)
        before = _dump(data)
        yield data
        if _dump(data) != before:
            write(path, data, record_format, mode=mode, fsync=fsync)
