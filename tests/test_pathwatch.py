"""The process's inotify watch: waking waiters when a file appears."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import threading
from pathlib import Path

from firec.vm import _pathwatch
from firec.vm._async import io as _async_io
from firec.vm._sync import io as _sync_io


def pump_until_quiet(watch: _pathwatch.PathWatch) -> None:
    while select.select([watch.fileno()], [], [], 0)[0]:
        watch.pump()


def test_creation_in_a_watched_directory_calls_its_callbacks(tmp_path: Path) -> None:
    watch = _pathwatch.shared()
    assert watch is not None and _pathwatch.shared() is watch  # one per process
    other = tmp_path / "other"
    other.mkdir()
    woken: list[str] = []
    first = watch.watch(tmp_path, lambda: woken.append("first"))
    second = watch.watch(tmp_path, lambda: woken.append("second"))
    elsewhere = watch.watch(other, lambda: woken.append("elsewhere"))
    assert None not in (first, second, elsewhere)
    (tmp_path / "firecracker.socket").touch()
    assert select.select([watch.fileno()], [], [], 5)[0]
    pump_until_quiet(watch)
    assert sorted(woken) == ["first", "second"]
    for token in (first, second, elsewhere):
        assert token is not None
        watch.unwatch(token)
    woken.clear()
    (tmp_path / "later").touch()
    pump_until_quiet(watch)
    assert woken == []


def test_a_missing_directory_cannot_be_watched_and_a_removed_one_is_harmless(
    tmp_path: Path,
) -> None:
    watch = _pathwatch.shared()
    assert watch is not None
    assert watch.watch(tmp_path / "missing", lambda: None) is None
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    token = watch.watch(doomed, lambda: None)
    assert token is not None
    shutil.rmtree(doomed)
    pump_until_quiet(watch)
    watch.unwatch(token)  # the kernel already dropped the watch
    watch.unwatch(token)  # twice is fine


def test_sync_pause_ends_when_the_path_appears(tmp_path: Path) -> None:
    path = tmp_path / "api.socket"
    timer = threading.Timer(0.001, path.touch)
    timer.start()
    while not path.exists():
        _sync_io.pause(1.0, appears=path)
    timer.join()


async def test_async_pause_ends_when_the_path_appears(tmp_path: Path) -> None:
    path = tmp_path / "api.socket"
    loop = asyncio.get_running_loop()
    loop.call_later(0.001, path.touch)
    while not path.exists():
        await _async_io.pause(1.0, appears=path)
    watch = _pathwatch.shared()
    assert watch is not None
    assert watch._readers == {}  # the loop's reader was removed with the last wait


def test_a_forked_child_gets_its_own_instance() -> None:
    watch = _pathwatch.shared()
    assert watch is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's instance is closed here, a new one made
        ok = False
        try:
            child = _pathwatch.shared()
            ok = child is not None and child is not watch and watch._inotify.closed
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)
    assert _pathwatch.shared() is watch


def test_waiting_docstring_examples() -> None:
    import doctest

    from firec.vm import _waiting

    assert doctest.testmod(_waiting).failed == 0
