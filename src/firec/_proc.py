"""Processes as ``/proc`` shows them: one process told apart from a reused pid, a VMM's threads.

The ground floor's view of processes, for every room above it: the API
client watches a Firecracker's VMM thread (:class:`VmmThreadWatch`, for the
requests Firecracker 1.0 to 1.3 lose) and finds who serves a socket
(:func:`socket_peer_pid`); network records and host records name their
processes (:class:`ProcessRef`, with :func:`boot_id`); the registry and a
connecting machine find a VMM by its arguments (:func:`command_lines`). :mod:`firec.vm.process`
builds the VMM's process and its exit watch on these, and exports them all.

Example::

    >>> import os
    >>> me = ProcessRef.of(os.getpid())
    >>> me is not None and me.alive() and me.boot == boot_id()
    True
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessRef",
    "VmmThreadWatch",
    "VmmThreads",
    "boot_id",
    "command_lines",
    "socket_peer_pid",
    "wait_until",
]


def _kill(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; ``False`` if there is no such process."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


class VmmThreads:
    """A VMM's threads, as ``/proc/<pid>/task`` shows them.

    Firecracker names its threads: its main thread (thread id = pid) runs the
    VMM's event loop, ``fc_api`` serves the API, and ``fc_vcpu N`` run the
    guest's vCPUs. :class:`ExitWatch` and :class:`VmmThreadWatch` look at
    them through this view. Thread ids are strings, as in the file names.

    Example::

        >>> import os
        >>> threads = VmmThreads(os.getpid())
        >>> str(os.getpid()) in threads.names() and threads.exists(str(os.getpid()))
        True
    """

    #: The name of Firecracker's API thread, and how its vCPU threads' names start.
    API = "fc_api"
    VCPU = "fc_vcpu"

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.task = f"/proc/{pid}/task"

    def names(self) -> dict[str, str] | None:
        """Every thread, thread id -> name; ``None`` once the process is gone.

        Reading a thread's name costs ~10 us: to follow threads already
        found, :meth:`exists` is cheaper.
        """
        try:
            tids = os.listdir(self.task)
        except OSError:
            return None
        names = {}
        for tid in tids:  # os.open and os.read: a text file object costs ~5x more, and
            try:  # ExitWatch.observe() reads them all right after InstanceStart
                fd = os.open(f"{self.task}/{tid}/comm", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    names[tid] = os.read(fd, 64).decode(errors="replace").rstrip("\n")
                finally:
                    os.close(fd)
            except OSError:
                continue  # that thread just ended
        return names

    @classmethod
    def vcpus(cls, names: dict[str, str]) -> list[str]:
        """The ids of the vCPU threads among ``names`` (from :meth:`names`)."""
        return [tid for tid, name in names.items() if name.startswith(cls.VCPU)]

    @classmethod
    def api(cls, names: dict[str, str]) -> str | None:
        """The id of the API thread among ``names``, if it is there."""
        return next((tid for tid, name in names.items() if name == cls.API), None)

    def exists(self, tid: str) -> bool:
        """Whether thread ``tid`` is still there (one ``stat``)."""
        return os.path.exists(f"{self.task}/{tid}")

    def open_stat(self, tid: str) -> int:
        """A descriptor of thread ``tid``'s stat file, to read its state again and again.

        Raises:
            OSError: the thread is not there (or not readable).
        """
        return os.open(f"{self.task}/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC)

    @staticmethod
    def state(stat_fd: int) -> str | None:
        """The state letter (``R``, ``S``, ``D``...) in a stat file; ``None`` once unreadable."""
        try:
            data = os.pread(stat_fd, 512, 0)
        except OSError:
            return None
        end = data.rfind(b")")  # the state follows the command name, which may hold anything
        if end < 0 or len(data) < end + 3:
            return None
        return chr(data[end + 2])


@functools.cache  # a process never outlives its boot
def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); pids mean nothing across boots."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:  # os.open and os.read: half the time of Path.read_text
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    return text.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class ProcessRef:
    """One process, told apart from any later process that gets the same pid.

    Attributes:
        pid: the process id.
        start: when it started, in clock ticks after boot (``/proc/<pid>/stat`` field 22).
        boot: the boot it ran in (:func:`boot_id`).
    """

    pid: int
    start: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The running process ``pid``, or ``None`` when there is none."""
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
            return None
        return cls(pid, int(fields[19]), boot_id())

    def alive(self) -> bool:
        """Whether this very process still runs (not a zombie, not a reused pid)."""
        return ProcessRef.of(self.pid) == self

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if this very process still runs; ``False`` otherwise."""
        return self.alive() and _kill(self.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; whether it did."""
        return wait_until(lambda: not self.alive(), timeout)

    def reaped(self) -> bool:
        """Whether the process is gone from the process table (not even a zombie)."""
        fields = _stat_fields(self.pid)
        return fields is None or len(fields) < 20 or int(fields[19]) != self.start


def command_lines(*, skip_self: bool = False) -> Iterator[tuple[int, list[bytes]]]:
    """Every process's pid and arguments (``/proc/<pid>/cmdline``, as bytes), pid by pid.

    A process that ends while it is read is left out, and so is one whose
    arguments cannot be read; a kernel thread's are empty. With
    ``skip_self``, this process is left out too.

    Example::

        >>> import os, sys
        >>> mine = dict(command_lines())[os.getpid()]
        >>> mine == [os.fsencode(arg) for arg in sys.orig_argv]
        True
        >>> os.getpid() in dict(command_lines(skip_self=True))
        False
    """
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if skip_self and pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # it ended, or is not ours to read
        yield pid, raw.removesuffix(b"\0").split(b"\0") if raw else []


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Call ``done`` every few ms until it is true or ``timeout`` s pass; whether it came true."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def socket_peer_pid(socket_path: str) -> int | None:
    """The pid of the process serving the Unix socket ``socket_path`` (``SO_PEERCRED``).

    ``None`` when nothing serves it, or the server is in a pid namespace that
    this one cannot see.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(socket_path)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None


class VmmThreadWatch:
    """Whether a Firecracker's VMM thread is asleep, read from ``/proc`` (:class:`VmmThreads`).

    Firecracker runs its VMM event loop on its main thread (thread id = pid).
    Asleep means back in its event loop (``epoll_wait``), or blocked waiting for
    the next API request; awake means running or runnable. The stat file stays
    open, so each look costs one read (~5 us).

    Raises:
        OSError: the process is not there (or not readable).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = VmmThreads(pid).open_stat(str(pid))

    def asleep(self) -> bool | None:
        """Whether the thread sleeps now; ``None`` when that cannot be read (it is gone)."""
        if self._fd is None:
            return None
        state = VmmThreads.state(self._fd)
        if state is None:
            return None
        return state not in "RD"  # running or runnable; in uninterruptible I/O

    def close(self) -> None:
        """Close the stat file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
