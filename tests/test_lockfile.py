"""firec._lockfile: flock locks that exclude filelock's, and a lock file removed while waited on.

Also :class:`firec._jsonfile.Lock`, built on it: per thread, and re-entrant
within a thread, as its filelock-based predecessor was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import filelock
import pytest

from firec import _jsonfile, _lockfile


def test_it_excludes_filelock_and_filelock_excludes_it(tmp_path: Path) -> None:
    path = tmp_path / "vm.lock"
    fd = _lockfile.acquire(path, 1.0)
    try:
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(path).acquire(timeout=0.05)
    finally:
        _lockfile.release(fd)
    # filelock in another process: another firec, of a version that took it so
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys\n"
            f"with filelock.FileLock({str(path)!r}):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(_lockfile.Timeout, match=r"more than 0\.05s"):
            _lockfile.acquire(path, 0.05)
    finally:
        holder.communicate("")
    _lockfile.release(_lockfile.acquire(path, 1.0))  # free once its holder is done


def test_a_lock_file_removed_while_waited_on_is_not_what_the_waiter_holds(
    tmp_path: Path,
) -> None:
    """The holder removes the lock file and lets go: the waiter must lock the file now there."""
    path = tmp_path / "vm.lock"
    first = _lockfile.acquire(path, 1.0)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(_lockfile.acquire(path, 5.0)))
    waiter.start()
    time.sleep(0.05)  # the waiter tries, and waits, on the file there now
    path.unlink()
    _lockfile.release(first)
    waiter.join(5.0)
    assert got, "the waiter never got the lock"
    try:
        held, there = os.fstat(got[0]), os.stat(path)  # a new file, made by the waiter
        assert (held.st_ino, held.st_dev) == (there.st_ino, there.st_dev)
        with pytest.raises(_lockfile.Timeout):
            _lockfile.acquire(path, 0)  # and it keeps out whoever comes next
    finally:
        _lockfile.release(got[0])


def test_one_try_and_no_file_made_without_create(tmp_path: Path) -> None:
    path = tmp_path / "vm.lock"
    with pytest.raises(FileNotFoundError):
        _lockfile.acquire(path, 0, create=False)
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        _lockfile.acquire(tmp_path / "no-such-dir" / "vm.lock", 0)
    fd = _lockfile.acquire(path, 0, mode=0o640)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o640
        started = time.monotonic()
        with pytest.raises(_lockfile.Timeout):
            _lockfile.acquire(path, 0, create=False)
        assert time.monotonic() - started < 0.5
    finally:
        _lockfile.release(fd)


def test_jsonfile_lock_is_reentrant_in_a_thread_and_excludes_other_threads(
    tmp_path: Path,
) -> None:
    lock = _jsonfile.Lock(tmp_path / "thing.json")
    with lock.held(), lock.held(0):  # nested in one thread: no wait
        outcome: list[str] = []

        def other() -> None:
            try:
                lock.acquire(0.05)
            except _jsonfile.LockTimeout as exc:
                outcome.append(str(exc))
            else:
                lock.release()
                outcome.append("got it")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert outcome and "more than 0.05s" in outcome[0]
    # given back when the outermost use ended: filelock takes it at once
    with (
        filelock.FileLock(lock.file).acquire(timeout=0),
        pytest.raises(_jsonfile.LockTimeout),
        lock.held(0.05),
    ):
        pass
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
