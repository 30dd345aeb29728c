"""Follow a file, a fifo or a pipe line by line (or byte by byte).

Firecracker writes its log, its metrics and its serial console to files,
fifos or its stdout. The readers here deliver each complete line to a
callback, as ``str`` without the line ending (``\\n`` or ``\\r\\n``), decoded
as UTF-8 with invalid bytes replaced. A partial last line is kept until it
completes, or until the stream ends or the reader stops, when it is delivered
as it is. A line longer than :data:`MAX_LINE_BYTES` is delivered in pieces.
With ``lines=False`` the callback gets the ``bytes`` as they are read instead
(what :meth:`firec.vm.console.Console.stream` uses).

What is followed, and how:

* **a regular file** (a path or an fd): ``tail -f`` from offset 0; the file
  is polled every ``poll_interval`` seconds; if it shrinks (truncated), it is
  read again from the start. With ``follow=False`` the reader stops at the
  end of the file.
* **a fifo** (a path): opened without blocking, so a fifo nobody writes to
  yet is fine. With ``follow=True`` the reader holds a write end of the fifo
  itself, so writers may come, go and come back without the reader ever
  seeing an end of file; it runs until :meth:`~LineReader.stop`. With
  ``follow=False`` it waits for a first writer and stops when the last writer
  closes.
* **a pipe, socket or terminal** (an fd, e.g. a subprocess's stdout): read
  until end of file. The reader works on its own duplicate of the fd and
  never changes its flags, so the caller keeps and closes its own.

:class:`LineReader` runs a daemon thread per reader; :class:`AsyncLineReader`
runs on the asyncio loop with no thread (``loop.add_reader`` for fifos and
pipes, a polling task for regular files). They differ only in how they wait:
opening, reading what is there, cutting lines and delivering them are shared
(``_follow.py``). :func:`tail_lines` reads the last lines of a file without
reading all of it.

Example::

    from firec.vm.streams import LineReader, tail_lines

    with LineReader("/run/fc/log.fifo", print):
        ...  # Firecracker runs, each log line is printed as it arrives

    print(tail_lines("/run/fc/firecracker.log", 20))
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import os
import select
import stat
import threading

from firec.errors import FirecError
from firec.vm._follow import (
    MAX_LINE_BYTES,
    ChunkCallback,
    Follower,
    LineCallback,
    Opened,
    decode,
    log,
)

__all__ = [
    "MAX_LINE_BYTES",
    "AsyncLineReader",
    "ChunkCallback",
    "LineCallback",
    "LineReader",
    "tail_lines",
]


class LineReader(Follower):
    """Follow a file, fifo or pipe in a daemon thread, calling ``callback`` per line.

    Args:
        source: a path (regular file or fifo) or an open fd (pipe, socket,
            terminal, or a regular file). An fd is duplicated; the caller
            still owns and closes its own.
        callback: called in the reader thread with each line (``str``, no
            line ending). An exception from it is logged on the
            ``firec.vm.streams`` logger and the reader goes on.
        follow: keep following a regular file or fifo after its current end
            (``tail -f``); with ``False`` stop at the first end of file.
            Pipes always stop at end of file.
        poll_interval: seconds between two looks at a regular file.
        lines: with ``False``, ``callback`` gets the ``bytes`` as they are
            read instead of lines: nothing waits for a newline (a shell's
            prompt, a terminal's escape sequences, binary data).

    :meth:`start` opens the source (raising :class:`~firec.errors.FirecError`
    if it cannot) and starts the thread, without waiting for it to run.
    :meth:`stop` returns promptly: it reads what is already there, delivers
    any partial last line, closes the fds and joins the thread. It may be
    called from the callback itself.

    Example::

        import subprocess
        from firec.vm.streams import LineReader

        proc = subprocess.Popen(["firecracker", "--api-sock", sock], stdout=subprocess.PIPE)
        reader = LineReader(proc.stdout.fileno(), print)
        reader.start()
        ...
        proc.wait()
        reader.wait(5)  # the pipe ends when the process has exited
        reader.stop()
    """

    def _init_state(self) -> None:
        self._thread: threading.Thread | None = None
        self._opened: Opened | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._done = threading.Event()
        self._wake_lock = threading.Lock()

    def start(self) -> None:
        """Open the source and start the reader thread (without waiting for it to run).

        Raises:
            FirecError: the source cannot be opened (missing path, bad fd),
                or the reader was started before.
        """
        if self._thread is not None:
            raise FirecError("this LineReader was already started; create a new one")
        opened = self._open()
        try:
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            opened.close()
            raise FirecError(f"cannot follow {opened.name}: {exc.strerror or exc}") from exc
        self._opened = opened
        self._thread = threading.Thread(
            target=self._run, name=f"firec-lines {opened.name}", daemon=True
        )
        # Thread.start() returns once the new thread runs: on a busy host a
        # scheduler tick later (~4 ms), at times more. A helper waits for that
        # instead of the caller (a VM's boot goes on; nothing of the source is
        # lost meanwhile: the thread reads it when it runs).
        try:
            _thread.start_new_thread(self._start_thread, ())
        except BaseException:
            self._close_unstarted()
            raise

    def _start_thread(self) -> None:
        assert self._thread is not None and self._opened is not None
        try:
            self._thread.start()
        except BaseException as exc:  # no thread to read it: the reader ends, as at its end
            log.error("cannot start a thread to follow %s: %s", self._opened.name, exc)
            self._close_unstarted()

    def _close_unstarted(self) -> None:
        """Close what :meth:`start` opened for a thread that never ran; the reader is done."""
        if self._opened is not None:
            self._opened.close()
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        self._done.set()

    def stop(self) -> None:
        """Deliver what is already there, close the source and end the thread.

        Does nothing if the reader was never started or already stopped.
        """
        if self._thread is None:
            return
        self._stopping = True
        with self._wake_lock:
            if self._wake_w >= 0:  # else the thread has ended and closed it
                with contextlib.suppress(BlockingIOError):  # already full of wake-ups
                    os.write(self._wake_w, b"x")
        if threading.current_thread() is not self._thread:
            self._done.wait()  # (set even when its thread could not start)
            if self._thread.ident is not None:
                self._thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the reader has finished (end of file, or stopped).

        Returns:
            Whether it has finished within ``timeout`` seconds.
        """
        return self._done.wait(timeout)

    def __enter__(self) -> LineReader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        opened = self._opened
        assert opened is not None
        try:
            if opened.kind == "file":
                self._run_file(opened)
            else:
                self._run_stream(opened)
        except OSError as exc:
            self._failed(opened, exc)
        finally:
            self._close(opened)
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            self._done.set()

    def _run_file(self, opened: Opened) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            # read after looking at the flag: what was written before stop() is then seen
            stopping = self._stopping
            self._read_file(opened)
            if stopping or not self._follow:
                return
            poller.poll(max(1, round(self._poll_interval * 1000)))

    def _run_stream(self, opened: Opened) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(opened.fd, select.POLLIN)
        while not self._stopping:
            events = dict(poller.poll())
            if opened.fd not in events:
                continue
            if events[opened.fd] & select.POLLNVAL or not self._read_stream(opened):
                return
        self._read_ready(opened)  # stopping: what is there already, without waiting


class AsyncLineReader(Follower):
    """Follow a file, fifo or pipe on the running asyncio loop, without a thread.

    Same arguments and line semantics as :class:`LineReader`; ``callback`` is
    called on the loop (keep it quick; schedule a task for slow work). Fifos
    and pipes are watched with ``loop.add_reader``; a regular file is polled
    by a task. Many readers can share one loop.

    :meth:`start` (plain method, needs a running loop) opens the source;
    ``await`` :meth:`stop` to deliver what is left and close it; ``await``
    :meth:`wait` for the end of a pipe. Also an async context manager.

    Example::

        from firec.vm.streams import AsyncLineReader

        async with AsyncLineReader("/run/fc/log.fifo", print) as reader:
            ...
        print(reader.lines_seen, "lines")
    """

    def _init_state(self) -> None:
        self._opened: Opened | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        self._watching = False

    def start(self) -> None:
        """Open the source and start watching it on the running loop.

        Raises:
            FirecError: the source cannot be opened, or the reader was
                started before.
            RuntimeError: no asyncio loop is running.
        """
        if self._loop is not None:
            raise FirecError("this AsyncLineReader was already started; create a new one")
        loop = asyncio.get_running_loop()
        opened = self._open()
        self._loop, self._opened, self._done = loop, opened, asyncio.Event()
        if opened.kind == "file":
            self._task = loop.create_task(self._poll_file(opened))
        else:
            loop.add_reader(opened.fd, self._on_readable)
            self._watching = True

    async def stop(self) -> None:
        """Deliver what is already there, close the source and stop watching.

        Does nothing if the reader was never started or already finished.
        """
        opened = self._opened
        if opened is None:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            if self._opened is None:  # the task finished on its own meanwhile
                return
            self._read_file(opened)
        else:
            self._unwatch()
            self._read_ready(opened)
        self._finish()

    async def wait(self) -> None:
        """Wait until the reader has finished (end of file, or stopped)."""
        if self._done is None:
            raise FirecError("this AsyncLineReader was not started")
        await self._done.wait()

    async def __aenter__(self) -> AsyncLineReader:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _on_readable(self) -> None:
        opened = self._opened
        assert opened is not None
        try:
            if self._read_stream(opened):
                return
        except OSError as exc:
            self._failed(opened, exc)
        self._unwatch()
        self._finish()

    async def _poll_file(self, opened: Opened) -> None:
        try:
            while True:
                self._read_file(opened)
                if not self._follow:
                    break
                await asyncio.sleep(self._poll_interval)
        except OSError as exc:
            self._failed(opened, exc)
        self._finish()

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None and self._opened is not None:
            self._loop.remove_reader(self._opened.fd)
            self._watching = False

    def _finish(self) -> None:
        if self._opened is None:
            return
        self._close(self._opened)
        self._opened = None
        assert self._done is not None
        self._done.set()


def tail_lines(path: str | os.PathLike[str], n: int) -> list[str]:
    """Return the last ``n`` lines of a regular file, reading it from the end.

    Lines are decoded like the readers do (UTF-8, invalid bytes replaced, no
    line ending); a last line without newline counts as a line.

    Raises:
        FirecError: the file cannot be read, or is not a regular file (a
            fifo cannot be tailed: reading it would take the lines away).

    Example::

        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".log") as f:
        ...     _ = f.write("one\\ntwo\\nthree\\n")
        ...     f.flush()
        ...     tail_lines(f.name, 2)
        ['two', 'three']
    """
    if n <= 0:
        return []
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise FirecError(f"cannot read the last lines of {name}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FirecError(f"cannot read the last lines of {name}: not a regular file")
        end = info.st_size
        if end == 0:
            return []
        data = b""
        block = 8192
        # Read backwards until the data holds n newlines before its last line.
        while end > 0 and data.count(b"\n", 0, max(0, len(data) - 1)) < n:
            start = max(0, end - block)
            data = os.pread(fd, end - start, start) + data
            end = start
            block = min(block * 2, 1 << 22)
    except OSError as exc:
        raise FirecError(f"cannot read the last lines of {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if data.endswith(b"\n"):
        data = data[:-1]
    pieces = data.split(b"\n")
    if end > 0:
        pieces = pieces[1:]  # the first piece may be the end of a longer line
    return [decode(piece) for piece in pieces[-n:]]
