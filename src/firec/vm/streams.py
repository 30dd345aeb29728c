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
pipes, a polling task for regular files). :func:`tail_lines` reads the last
lines of a file without reading all of it.

Example::

    from firec.vm.streams import LineReader, tail_lines

    with LineReader("/run/fc/log.fifo", print):
        ...  # Firecracker runs, each log line is printed as it arrives

    print(tail_lines("/run/fc/firecracker.log", 20))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import stat
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, overload

from firec.errors import FirecError

__all__ = [
    "MAX_LINE_BYTES",
    "AsyncLineReader",
    "ChunkCallback",
    "LineCallback",
    "LineReader",
    "tail_lines",
]

MAX_LINE_BYTES: Final = 1 << 20
"""A line longer than this (1 MiB) is delivered in pieces of this size."""

LineCallback = Callable[[str], object]
"""What receives each line: any callable taking the line as ``str``."""

ChunkCallback = Callable[[bytes], object]
"""What receives the bytes as they are read (``lines=False``): prompts, escapes, binary."""

Source = str | os.PathLike[str] | int

_CHUNK: Final = 65536
_log = logging.getLogger("firec.streams")


class _LineSplitter:
    """Cut bytes into decoded lines, keeping a partial last line."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        *complete, partial = (self._partial + data).split(b"\n")
        pieces: list[bytes] = []
        for piece in complete:
            while len(piece) > MAX_LINE_BYTES:
                pieces.append(piece[:MAX_LINE_BYTES])
                piece = piece[MAX_LINE_BYTES:]
            pieces.append(piece)
        while len(partial) > MAX_LINE_BYTES:
            pieces.append(partial[:MAX_LINE_BYTES])
            partial = partial[MAX_LINE_BYTES:]
        self._partial = partial
        return [_decode(piece) for piece in pieces]

    def flush(self) -> list[str]:
        partial, self._partial = self._partial, b""
        return [_decode(partial)] if partial else []


def _decode(piece: bytes) -> str:
    if piece.endswith(b"\r"):
        piece = piece[:-1]
    return piece.decode("utf-8", errors="replace")


class _Opened:
    """The fds of one followed source, opened by the reader and closed by it."""

    def __init__(self, source: Source, follow: bool) -> None:
        self.name = f"fd {source}" if isinstance(source, int) else os.fspath(source)
        self.fd = -1
        self.writer_fd = -1  # our own write end of a followed fifo
        self.kind: Literal["file", "stream"] = "stream"
        try:
            if isinstance(source, int):
                self.fd = os.dup(source)
                mode = os.fstat(self.fd).st_mode
            else:
                mode = os.stat(source).st_mode
                if stat.S_ISDIR(mode):
                    raise IsADirectoryError(21, "Is a directory")
                flags = os.O_RDONLY | os.O_CLOEXEC
                if not stat.S_ISREG(mode):
                    flags |= os.O_NONBLOCK  # a fifo without writer must not block open()
                self.fd = os.open(source, flags)
                if stat.S_ISFIFO(mode) and follow:
                    self.writer_fd = os.open(source, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.close()
            raise FirecError(f"cannot follow {self.name}: {exc.strerror or exc}") from exc
        if stat.S_ISREG(mode):
            self.kind = "file"
        self.offset = 0

    def readable(self) -> bool:
        """Whether a read would return at once (data, or end of file)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    def read_stream(self) -> bytes | None:
        """One read of a stream: bytes, ``b""`` at end of file, None if nothing yet."""
        try:
            return os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return None

    def read_file(self) -> bytes:
        """What the regular file holds past our offset (from 0 again if it shrank)."""
        if os.fstat(self.fd).st_size < self.offset:
            self.offset = 0
        data = os.pread(self.fd, _CHUNK, self.offset)
        self.offset += len(data)
        return data

    def close(self) -> None:
        for fd in (self.fd, self.writer_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.writer_fd = -1


class _Delivery:
    """Hand what was read to the callback: complete lines, or (``lines=False``) bytes as read."""

    def __init__(self, callback: LineCallback | ChunkCallback, name: str, *, lines: bool) -> None:
        self._callback: Callable[[str | bytes], object] = callback  # type: ignore[assignment]
        self._name = name
        self._splitter = _LineSplitter() if lines else None
        self.lines_seen = 0

    def feed(self, data: bytes) -> None:
        if self._splitter is None:
            self._deliver([data])
        else:
            self._deliver(self._splitter.feed(data))

    def flush(self) -> None:
        if self._splitter is not None:
            self._deliver(self._splitter.flush())

    def _deliver(self, pieces: list[str] | list[bytes]) -> None:
        for piece in pieces:
            self.lines_seen += 1
            try:
                self._callback(piece)
            except Exception:
                _log.exception("callback for %s failed; the reader goes on", self._name)


class _Follower:
    """What both readers share: the source, how to follow it, where what is read goes."""

    @overload
    def __init__(
        self,
        source: Source,
        callback: LineCallback,
        *,
        follow: bool = ...,
        poll_interval: float = ...,
        lines: Literal[True] = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        source: Source,
        callback: ChunkCallback,
        *,
        follow: bool = ...,
        poll_interval: float = ...,
        lines: Literal[False],
    ) -> None: ...
    def __init__(
        self,
        source: Source,
        callback: LineCallback | ChunkCallback,
        *,
        follow: bool = True,
        poll_interval: float = 0.05,
        lines: bool = True,
    ) -> None:
        self._source = source
        self._follow = follow
        self._poll_interval = poll_interval
        name = f"fd {source}" if isinstance(source, int) else os.fspath(source)
        self._delivery = _Delivery(callback, name, lines=lines)
        self._init_state()

    def _init_state(self) -> None:
        """Set the reader's own state (called by ``__init__``)."""

    @property
    def lines_seen(self) -> int:
        """How many lines (with ``lines=False``: chunks) were delivered to the callback so far."""
        return self._delivery.lines_seen


class LineReader(_Follower):
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
    if it cannot) and starts the thread. :meth:`stop` returns promptly: it
    reads what is already there, delivers any partial last line, closes the
    fds and joins the thread. It may be called from the callback itself.

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
        self._opened: _Opened | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._done = threading.Event()
        self._wake_lock = threading.Lock()

    def start(self) -> None:
        """Open the source and start the reader thread.

        Raises:
            FirecError: the source cannot be opened (missing path, bad fd),
                or the reader was started before.
        """
        if self._thread is not None:
            raise FirecError("this LineReader was already started; create a new one")
        opened = _Opened(self._source, self._follow)
        try:
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            opened.close()
            raise FirecError(f"cannot follow {opened.name}: {exc.strerror or exc}") from exc
        self._opened = opened
        self._thread = threading.Thread(
            target=self._run, name=f"firec-lines {opened.name}", daemon=True
        )
        self._thread.start()

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
            _log.error("reading %s failed: %s", opened.name, exc)
        finally:
            self._delivery.flush()
            opened.close()
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            self._done.set()

    def _run_file(self, opened: _Opened) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            # read after looking at the flag: what was written before stop() is then seen
            stopping = self._stopping
            while data := opened.read_file():
                self._delivery.feed(data)
            if stopping or not self._follow:
                return
            poller.poll(max(1, round(self._poll_interval * 1000)))

    def _run_stream(self, opened: _Opened) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(opened.fd, select.POLLIN)
        while not self._stopping:
            events = dict(poller.poll())
            if opened.fd not in events:
                continue
            if events[opened.fd] & select.POLLNVAL:
                return
            data = opened.read_stream()
            if data == b"":
                return
            if data:
                self._delivery.feed(data)
        # Stopping: take what is already there, without waiting for more.
        while opened.readable() and (data := opened.read_stream()):
            self._delivery.feed(data)


class AsyncLineReader(_Follower):
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
        self._opened: _Opened | None = None
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
        opened = _Opened(self._source, self._follow)
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
            while data := opened.read_file():
                self._delivery.feed(data)
        else:
            self._unwatch()
            while opened.readable() and (chunk := opened.read_stream()):
                self._delivery.feed(chunk)
        self._finish()

    async def wait(self) -> None:
        """Wait until the reader has finished (end of file, or stopped)."""
        if self._done is None:
            raise FirecError("this AsyncLineReader was not started")
        await self._done.wait()

    async def __aenter__(self) -> AsyncLineReader:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _on_readable(self) -> None:
        opened = self._opened
        assert opened is not None
        try:
            data = opened.read_stream()
        except OSError as exc:
            _log.error("reading %s failed: %s", opened.name, exc)
            data = b""
        if data is None:
            return
        if data:
            self._delivery.feed(data)
            return
        self._unwatch()
        self._finish()

    async def _poll_file(self, opened: _Opened) -> None:
        try:
            while True:
                while data := opened.read_file():
                    self._delivery.feed(data)
                if not self._follow:
                    break
                await asyncio.sleep(self._poll_interval)
        except OSError as exc:
            _log.error("reading %s failed: %s", opened.name, exc)
        self._finish()

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None and self._opened is not None:
            self._loop.remove_reader(self._opened.fd)
            self._watching = False

    def _finish(self) -> None:
        if self._opened is None:
            return
        self._delivery.flush()
        self._opened.close()
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
    return [_decode(piece) for piece in pieces[-n:]]
