"""LineReader.start() returns before its thread runs: nothing is lost, nothing leaks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

from firec.vm.streams import LineReader


def _settled(threads: int) -> bool:
    deadline = time.monotonic() + 10
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count() == threads


def test_stopped_at_once_it_still_delivers_what_was_written() -> None:
    threads = threading.active_count()
    for _ in range(50):
        read_end, write_end = os.pipe()
        os.write(write_end, b"one\ntwo\npartial")
        lines: list[str] = []
        reader = LineReader(read_end, lines.append)
        reader.start()
        reader.stop()  # maybe before its thread ran
        os.close(read_end)
        os.close(write_end)
        assert lines == ["one", "two", "partial"]
        assert reader.wait(0)
    assert _settled(threads)


def test_a_pipe_read_to_its_end_without_stop() -> None:
    read_end, write_end = os.pipe()
    lines: list[str] = []
    reader = LineReader(read_end, lines.append)
    reader.start()
    os.write(write_end, b"hello\n")
    os.close(write_end)
    assert reader.wait(10)
    reader.stop()
    os.close(read_end)
    assert lines == ["hello"]


def test_stop_from_the_callback_before_start_returned_to_anyone() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"first\nsecond\n")
    lines: list[str] = []
    reader: LineReader

    def on_line(line: str) -> None:
        lines.append(line)
        reader.stop()  # in the reader's own thread: it must not wait for itself

    reader = LineReader(read_end, on_line)
    reader.start()
    assert reader.wait(10)
    reader.stop()
    os.close(read_end)
    os.close(write_end)
    assert lines[0] == "first"


def test_a_thread_that_cannot_start_ends_the_reader_and_says_why() -> None:
    """In a process of its own: the helper's log record registers it as a (dummy) thread."""
    script = textwrap.dedent(
        """
        import logging, os, threading
        from firec.vm.streams import LineReader

        def refuse(self):
            raise RuntimeError("can't start new thread")

        logging.basicConfig(format="%(levelname)s %(message)s")
        read_end, write_end = os.pipe()
        reader = LineReader(read_end, print)
        threading.Thread.start = refuse
        reader.start()
        assert reader.wait(10), "the reader never ended"
        reader.stop()  # nothing to join
        print("ended")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ended\n"
    assert "ERROR cannot start a thread to follow fd" in done.stderr
    assert "can't start new thread" in done.stderr
