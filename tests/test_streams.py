"""Line readers on real files, fifos and pipes; tail_lines."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firec.errors import FirecError
from firec.vm._follow import Opened as _Opened
from firec.vm.streams import MAX_LINE_BYTES, AsyncLineReader, LineReader, tail_lines

WAIT = 10.0  # seconds before a wait is declared hung (never reached when things work)


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if the test leaves an fd open or a thread running."""
    gc.collect()  # fds of earlier tests' garbage must not close during this one
    fds, threads = open_fds(), threading.active_count()
    yield
    deadline = time.monotonic() + WAIT
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == threads
    gc.collect()
    assert open_fds() == fds


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


async def async_wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def stop_within(reader: LineReader) -> None:
    """Call reader.stop() and fail (instead of hanging the run) if it does not return."""
    stopper = threading.Thread(target=reader.stop, daemon=True)
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive(), "LineReader.stop() hung"


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def write_fifo(path: Path, data: bytes) -> None:
    """Write to a fifo that has a reader, as a separate writer that then closes."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "log.fifo"
    os.mkfifo(path)
    return path


# --- regular files -----------------------------------------------------------------


def test_file_is_followed_from_the_start_as_it_grows(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"first\nsec")
    lines: list[str] = []
    with LineReader(path, lines.append, poll_interval=0.01) as reader:
        wait_until(lambda: lines == ["first"], "the existing line")
        append(path, b"ond\r\nthird\n")
        wait_until(lambda: len(lines) == 3, "the appended lines")
        append(path, b"no newline yet")
    assert lines == ["first", "second", "third", "no newline yet"]
    assert reader.lines_seen == 4


def test_stop_right_after_a_write_to_a_file_still_delivers_it(
    tmp_path: Path, no_leaks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() coming between the reader's last (empty) read and its look at the flag."""
    path = tmp_path / "fc.log"
    path.write_bytes(b"")
    lines: list[str] = []
    reader = LineReader(path, lines.append, poll_interval=0.01)
    original = _Opened.read_file
    raced = threading.Event()

    def read_then_race(opened: _Opened) -> bytes:
        data = original(opened)
        if not data and not raced.is_set():
            raced.set()
            append(path, b"last words\n")  # written, then stop() sets its flag at once
            reader._stopping = True
        return data

    monkeypatch.setattr(_Opened, "read_file", read_then_race)
    reader.start()
    assert raced.wait(WAIT)
    stop_within(reader)
    assert lines == ["last words"]


def test_file_without_follow_stops_at_its_end(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"a\nb\nlast")
    lines: list[str] = []
    reader = LineReader(path, lines.append, follow=False)
    reader.start()
    assert reader.wait(WAIT)
    assert lines == ["a", "b", "last"]
    reader.stop()


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"old line one\nold line two\n")
    lines: list[str] = []
    with LineReader(path, lines.append, poll_interval=0.01):
        wait_until(lambda: len(lines) == 2, "the old lines")
        path.write_bytes(b"new\n")  # truncates, then writes less than before
        wait_until(lambda: len(lines) == 3, "the line after truncation")
    assert lines[2] == "new"


def test_file_given_as_fd_is_read_and_the_fd_left_to_the_caller(
    tmp_path: Path, no_leaks: None
) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"x\ny\n")
    lines: list[str] = []
    with path.open("rb") as f:
        reader = LineReader(f.fileno(), lines.append, follow=False)
        reader.start()
        assert reader.wait(WAIT)
        reader.stop()
        assert f.read() == b"x\ny\n"  # our offset is untouched, the fd still open
    assert lines == ["x", "y"]


# --- fifos -------------------------------------------------------------------------


def test_fifo_with_late_writer_that_closes_and_comes_back(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    reader = LineReader(fifo, lines.append)
    reader.start()
    # A real writer process that opens the fifo only later, writes, closes.
    late = subprocess.Popen(["sh", "-c", f"sleep 0.2; printf 'one\\ntwo\\n' > {fifo}"])
    assert late.wait(WAIT) == 0
    wait_until(lambda: len(lines) == 2, "the late writer's lines")
    assert not reader.wait(0)  # its close is no end of file for a followed fifo
    again = subprocess.Popen(["sh", "-c", f"printf 'three\\n' > {fifo}"])
    assert again.wait(WAIT) == 0
    wait_until(lambda: len(lines) == 3, "the second writer's line")
    stop_within(reader)
    assert lines == ["one", "two", "three"]


def test_fifo_stop_without_any_writer_does_not_hang(fifo: Path, no_leaks: None) -> None:
    for follow in (True, False):
        reader = LineReader(fifo, lambda line: None, follow=follow)
        reader.start()
        assert not reader.wait(0.05)  # no writer: no end of file, no busy loop ending it
        stop_within(reader)
        assert reader.wait(0)


def test_fifo_without_follow_ends_when_the_writer_closes(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    reader = LineReader(fifo, lines.append, follow=False)
    reader.start()
    writer = subprocess.Popen(["sh", "-c", f"sleep 0.1; printf 'a\\nb' > {fifo}"])
    assert reader.wait(WAIT)
    assert writer.wait(WAIT) == 0
    assert lines == ["a", "b"]
    reader.stop()


def test_partial_line_is_completed_by_the_next_write(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    with LineReader(fifo, lines.append) as reader:
        write_fifo(fifo, b"half " + "é".encode()[:1])
        write_fifo(fifo, "é".encode()[1:] + b" whole\n")
        wait_until(lambda: reader.lines_seen == 1, "the completed line")
    assert lines == ["half é whole"]


def test_stop_delivers_what_is_buffered_and_the_partial_line(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    reader = LineReader(fifo, lines.append)
    reader.start()
    write_fifo(fifo, b"1\n2\n3 without newline")
    stop_within(reader)
    assert lines == ["1", "2", "3 without newline"]


def test_bytes_mode_delivers_what_arrives_without_waiting_for_a_newline(
    fifo: Path, no_leaks: None
) -> None:
    chunks: list[bytes] = []
    with LineReader(fifo, chunks.append, lines=False) as reader:
        write_fifo(fifo, b"login: ")
        wait_until(lambda: reader.lines_seen == 1, "the prompt")
        assert chunks == [b"login: "]
        write_fifo(fifo, b"\x1b[0m\xff\r\n")
        wait_until(lambda: reader.lines_seen == 2, "the second piece")
    assert b"".join(chunks) == b"login: \x1b[0m\xff\r\n"


def test_invalid_utf8_is_replaced(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    with LineReader(fifo, lines.append) as reader:
        write_fifo(fifo, b"bad \xff\xfe byte\n")
        wait_until(lambda: reader.lines_seen == 1, "the line")
    assert lines == ["bad \ufffd\ufffd byte"]


def test_endless_line_is_delivered_in_pieces(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (2 * MAX_LINE_BYTES + 10) + b"\n")
    sizes: list[int] = []
    reader = LineReader(path, lambda line: sizes.append(len(line)), follow=False)
    reader.start()
    assert reader.wait(WAIT)
    assert sizes == [MAX_LINE_BYTES, MAX_LINE_BYTES, 10]


def test_callback_error_is_logged_and_reading_goes_on(
    fifo: Path, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    lines: list[str] = []

    def callback(line: str) -> None:
        if line == "boom":
            raise ValueError("callback bug")
        lines.append(line)

    with caplog.at_level(logging.ERROR, logger="firec.streams"), LineReader(fifo, callback):
        write_fifo(fifo, b"boom\nafter\n")
        wait_until(lambda: lines == ["after"], "the line after the failing one")
    assert "callback for" in caplog.text and "callback bug" in caplog.text


def test_stop_from_inside_the_callback(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    reader: LineReader

    def callback(line: str) -> None:
        lines.append(line)
        reader.stop()

    reader = LineReader(fifo, callback)
    reader.start()
    write_fifo(fifo, b"only\n")
    assert reader.wait(WAIT)
    assert lines == ["only"]
    reader.stop()


# --- pipes -------------------------------------------------------------------------


def test_subprocess_stdout_pipe_is_read_to_its_end(no_leaks: None) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('a', flush=True); time.sleep(0.1); print('b')"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        flags = fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETFL)
        reader = LineReader(proc.stdout.fileno(), lines.append)
        reader.start()
        assert reader.wait(WAIT)
        reader.stop()
        assert lines == ["a", "b"]
        # The caller's fd is still open and its flags unchanged.
        assert fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETFL) == flags
    finally:
        proc.stdout.close()
        proc.wait()


def test_pipe_stop_with_a_silent_writer_does_not_hang(no_leaks: None) -> None:
    read_end, write_end = os.pipe()
    try:
        reader = LineReader(read_end, lambda line: None)
        reader.start()
        stop_within(reader)
    finally:
        os.close(read_end)
        os.close(write_end)


# --- misuse ------------------------------------------------------------------------


def test_missing_path_directory_and_bad_fd_are_refused(tmp_path: Path, no_leaks: None) -> None:
    with pytest.raises(FirecError, match=r"cannot follow .*nope"):
        LineReader(tmp_path / "nope", print).start()
    with pytest.raises(FirecError, match=r"cannot follow .*Is a directory"):
        LineReader(tmp_path, print).start()
    with pytest.raises(FirecError, match="cannot follow fd 9999"):
        LineReader(9999, print).start()


def test_a_reader_starts_only_once(fifo: Path, no_leaks: None) -> None:
    with LineReader(fifo, print) as reader, pytest.raises(FirecError, match="already started"):
        reader.start()
    reader.stop()  # a second stop is harmless


def test_stop_before_start_is_harmless() -> None:
    LineReader("/nonexistent", print).stop()


# --- asyncio -----------------------------------------------------------------------


async def test_async_fifo_reader_sees_writers_come_and_go(fifo: Path, no_leaks: None) -> None:
    lines: list[str] = []
    async with AsyncLineReader(fifo, lines.append) as reader:
        write_fifo(fifo, b"one\ntw")
        write_fifo(fifo, b"o\n")
        await async_wait_until(lambda: len(lines) == 2, "two lines")
        write_fifo(fifo, b"tail")
    assert lines == ["one", "two", "tail"]
    assert reader.lines_seen == 3


async def test_many_async_readers_on_one_loop_without_threads(
    tmp_path: Path, no_leaks: None
) -> None:
    threads = threading.active_count()
    count = 60
    fifos = []
    for i in range(count):
        path = tmp_path / f"f{i}"
        os.mkfifo(path)
        fifos.append(path)
    got: list[list[str]] = [[] for _ in range(count)]
    readers = [AsyncLineReader(path, got[i].append) for i, path in enumerate(fifos)]
    for reader in readers:
        reader.start()
    for i, path in enumerate(fifos):
        write_fifo(path, f"hello {i}\nbye {i}\n".encode())
    await async_wait_until(lambda: all(len(g) == 2 for g in got), "every reader's lines")
    assert threading.active_count() == threads
    await asyncio.wait_for(asyncio.gather(*(r.stop() for r in readers)), WAIT)
    assert got == [[f"hello {i}", f"bye {i}"] for i in range(count)]


async def test_async_stop_without_any_writer_does_not_hang(fifo: Path, no_leaks: None) -> None:
    for follow in (True, False):
        reader = AsyncLineReader(fifo, lambda line: None, follow=follow)
        reader.start()
        await asyncio.sleep(0.02)
        await asyncio.wait_for(reader.stop(), WAIT)
        await asyncio.wait_for(reader.wait(), WAIT)


async def test_async_fifo_without_follow_ends_when_the_writer_closes(
    fifo: Path, no_leaks: None
) -> None:
    lines: list[str] = []
    reader = AsyncLineReader(fifo, lines.append, follow=False)
    reader.start()
    write_fifo(fifo, b"only\n")
    await asyncio.wait_for(reader.wait(), WAIT)
    assert lines == ["only"]
    await reader.stop()


async def test_async_file_reader_polls_the_file(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"")
    lines: list[str] = []
    async with AsyncLineReader(path, lines.append, poll_interval=0.01):
        append(path, b"a\n")
        await async_wait_until(lambda: lines == ["a"], "the first line")
        append(path, b"b\nc")
    assert lines == ["a", "b", "c"]


async def test_async_file_without_follow_finishes_by_itself(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "fc.log"
    path.write_bytes(b"a\nb\n")
    lines: list[str] = []
    reader = AsyncLineReader(path, lines.append, follow=False)
    reader.start()
    await asyncio.wait_for(reader.wait(), WAIT)
    await reader.stop()
    assert lines == ["a", "b"]


async def test_async_subprocess_pipe_is_read_to_its_end(no_leaks: None) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "print('x'); print('y', end='')"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        reader = AsyncLineReader(proc.stdout.fileno(), lines.append)
        reader.start()
        await asyncio.wait_for(reader.wait(), WAIT)
        await reader.stop()
    finally:
        proc.stdout.close()
        proc.wait()
    assert lines == ["x", "y"]


async def test_async_bytes_mode_delivers_what_arrives(fifo: Path, no_leaks: None) -> None:
    chunks: list[bytes] = []
    async with AsyncLineReader(fifo, chunks.append, lines=False) as reader:
        write_fifo(fifo, b"$ ")
        await async_wait_until(lambda: reader.lines_seen == 1, "the prompt")
        assert chunks == [b"$ "]
        write_fifo(fifo, b"\xfe\n")
        await async_wait_until(lambda: reader.lines_seen == 2, "the second piece")
    assert chunks == [b"$ ", b"\xfe\n"]


async def test_async_misuse_is_refused(tmp_path: Path, no_leaks: None) -> None:
    with pytest.raises(FirecError, match="cannot follow"):
        AsyncLineReader(tmp_path / "nope", print).start()
    reader = AsyncLineReader(tmp_path / "nope", print)
    with pytest.raises(FirecError, match="not started"):
        await reader.wait()
    await reader.stop()  # harmless


# --- tail_lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "n", "expected"),
    [
        (b"", 3, []),
        (b"\n", 3, [""]),
        (b"one", 3, ["one"]),
        (b"a\nb\nc\n", 2, ["b", "c"]),
        (b"a\nb\nc", 2, ["b", "c"]),
        (b"a\n\nc\n", 2, ["", "c"]),
        (b"a\r\nb\r\n", 5, ["a", "b"]),
        (b"a\nb\n", 0, []),
        (b"caf\xc3\xa9 \xff\n", 1, ["café \ufffd"]),
    ],
)
def test_tail_lines(tmp_path: Path, content: bytes, n: int, expected: list[str]) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    assert tail_lines(path, n) == expected


def test_tail_lines_of_a_big_file_matches_reading_it_all(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines = ["x" * rng.randrange(0, 3000) + str(i) for i in range(2000)]
    path = tmp_path / "big.log"
    path.write_text("\n".join(lines) + "\n")
    for n in (1, 2, 3, 10, 37, 500, 1999, 2000, 5000):
        assert tail_lines(path, n) == lines[-n:]


def test_tail_lines_refuses_what_it_cannot_tail(tmp_path: Path, fifo: Path) -> None:
    with pytest.raises(FirecError, match="not a regular file"):
        tail_lines(fifo, 5)
    with pytest.raises(FirecError, match=r"cannot read the last lines of .*missing"):
        tail_lines(tmp_path / "missing", 5)


def test_docstring_examples() -> None:
    import doctest

    from firec.vm import _follow, streams

    for module in (streams, _follow):
        assert doctest.testmod(module).failed == 0, module.__name__
