"""What both line readers share: opening a source, reading what is there, cutting lines.

:class:`firec.vm.streams.LineReader` (a daemon thread) and
:class:`~firec.vm.streams.AsyncLineReader` (the event loop, no thread) are
the same reader but for how they wait: the thread blocks in ``poll()`` on the
source and a wake-up pipe, the loop calls back when the source is readable
(``loop.add_reader``) or a polling task wakes. Everything that does not wait
is here and used by both, so the two cannot drift apart: how a source is
opened (:class:`Opened`), how what it holds is read without blocking
(:class:`Follower`'s ``_read_*`` steps), how bytes become lines
(:class:`LineSplitter`) and how they reach the callback (:class:`Delivery`).

Example::

    >>> splitter = LineSplitter()
    >>> splitter.feed(b"one\\r\\ntw")
    ['one']
    >>> splitter.feed(b"o\\nthree")
    ['two']
    >>> splitter.flush()
    ['three']
"""

from __future__ import annotations

import logging
import os
import select
import stat
from collections.abc import Callable
from typing import Final, Literal, overload

from firec.errors import FirecError

__all__ = [
    "MAX_LINE_BYTES",
    "ChunkCallback",
    "Delivery",
    "Follower",
    "LineCallback",
    "LineSplitter",
    "Opened",
    "Source",
    "decode",
    "log",
]

MAX_LINE_BYTES: Final = 1 << 20
"""A line longer than this (1 MiB) is delivered in pieces of this size."""

LineCallback = Callable[[str], object]
"""What receives each line: any callable taking the line as ``str``."""

ChunkCallback = Callable[[bytes], object]
"""What receives the bytes as they are read (``lines=False``): prompts, escapes, binary."""

Source = str | os.PathLike[str] | int

_CHUNK: Final = 65536
#: Where the readers say what went wrong (the callbacks' errors, failed reads).
log = logging.getLogger("firec.streams")


class LineSplitter:
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
        return [decode(piece) for piece in pieces]

    def flush(self) -> list[str]:
        partial, self._partial = self._partial, b""
        return [decode(partial)] if partial else []


def decode(piece: bytes) -> str:
    """One line as the readers deliver it: UTF-8 (bad bytes replaced), no ``\\r``."""
    if piece.endswith(b"\r"):
        piece = piece[:-1]
    return piece.decode("utf-8", errors="replace")


class Opened:
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


class Delivery:
    """Hand what was read to the callback: complete lines, or (``lines=False``) bytes as read."""

    def __init__(self, callback: LineCallback | ChunkCallback, name: str, *, lines: bool) -> None:
        self._callback: Callable[[str | bytes], object] = callback  # type: ignore[assignment]
        self._name = name
        self._splitter = LineSplitter() if lines else None
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
                log.exception("callback for %s failed; the reader goes on", self._name)


class Follower:
    """What both readers share: the source, how to follow it, where what is read goes.

    The ``_read_*`` steps never wait: each reader calls them when its own
    way of waiting says there may be something to read.
    """

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
        self._delivery = Delivery(callback, name, lines=lines)
        self._init_state()

    def _init_state(self) -> None:
        """Set the reader's own state (called by ``__init__``)."""

    @property
    def lines_seen(self) -> int:
        """How many lines (with ``lines=False``: chunks) were delivered to the callback so far."""
        return self._delivery.lines_seen

    def _open(self) -> Opened:
        """Open the source (:class:`~firec.errors.FirecError` if it cannot be)."""
        return Opened(self._source, self._follow)

    def _read_file(self, opened: Opened) -> None:
        """Deliver what a regular file holds now, up to its current end."""
        while data := opened.read_file():
            self._delivery.feed(data)

    def _read_stream(self, opened: Opened) -> bool:
        """One read of a stream said to be readable: False when it has ended."""
        data = opened.read_stream()
        if data:
            self._delivery.feed(data)
        return data != b""

    def _read_ready(self, opened: Opened) -> None:
        """Deliver what a stream holds already, without waiting for more (stopping)."""
        while opened.readable() and (data := opened.read_stream()):
            self._delivery.feed(data)

    def _failed(self, opened: Opened, exc: OSError) -> None:
        """Say that reading ``opened`` failed (the reader then ends)."""
        log.error("reading %s failed: %s", opened.name, exc)

    def _close(self, opened: Opened) -> None:
        """Deliver a partial last line and close the source's fds."""
        self._delivery.flush()
        opened.close()
