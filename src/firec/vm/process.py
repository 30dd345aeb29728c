"""The VMM process: which pid it is, whether it runs, and how it ended.

Firecracker runs as our child, except under the jailer's ``--new-pid-ns``
(the jailer forks it into a new PID namespace and exits; the pid is then read
from the jailer's pidfile) and after :meth:`firec.Machine.connect` (someone
else started it). :class:`VmmProcess` hides the difference; waiting happens
in ``vm._sync.io`` / ``vm._async.io``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger("firec.machine")

__all__ = [
    "FIRECRACKER_EXIT_CODES",
    "ExitStatus",
    "ExitWatch",
    "ProcessRef",
    "VmmProcess",
    "VmmThreadWatch",
    "VmmThreads",
    "boot_id",
    "find_vmm_pid",
    "process_args",
    "socket_peer_pid",
    "wait_until",
]

#: Firecracker's own exit codes (``FcExitCode`` in its source) and what they mean.
FIRECRACKER_EXIT_CODES: dict[int, str] = {
    0: "exited cleanly (the guest reset or shut down, or Firecracker was asked to stop)",
    1: "a generic error",
    2: "an unexpected error",
    148: "a syscall forbidden by the seccomp filter",
    149: "SIGBUS",
    150: "SIGSEGV",
    151: "SIGXFSZ (a file size limit was exceeded)",
    152: "a bad configuration",
    153: "bad command-line arguments",
    154: "SIGXCPU (a CPU time limit was exceeded)",
    155: "SIGPIPE",
    156: "SIGHUP",
    157: "SIGILL",
}


@dataclass(frozen=True)
class ExitStatus:
    """How a VMM process ended.

    Attributes:
        code: the exit code, when it exited (``None`` if killed by a signal, or unknown).
        signal: the signal that killed it, if one did.
        reason: a sentence saying why, for people.
    """

    code: int | None
    signal: int | None
    reason: str

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """Interpret a :attr:`subprocess.Popen.returncode`."""
        if returncode < 0:
            sig = -returncode
            return cls(None, sig, f"killed by {signal.Signals(sig).name}")
        meaning = FIRECRACKER_EXIT_CODES.get(returncode, "an error")
        return cls(returncode, None, f"exit code {returncode}: {meaning}")

    @classmethod
    def unknown(cls) -> ExitStatus:
        """The process was not our child: it ended, but its status cannot be known."""
        return cls(None, None, "exited (status unknown: not a child of this process)")

    @property
    def ok(self) -> bool:
        """Whether Firecracker exited with status 0."""
        return self.code == 0

    def __str__(self) -> str:
        return self.reason


class VmmProcess:
    """A running (or ended) VMM process.

    Args:
        pid: the VMM's pid.
        popen: the child process, when the VMM is our child (or the jailer
            that execs into it).
    """

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.popen = popen if popen is not None and popen.pid == pid else None
        # not our child: told apart from a later process that reuses the pid
        self._ref = ProcessRef.of(pid) if self.popen is None else None
        self._ended_because: str | None = None  # why firec killed it, when it had to

    @property
    def exit_status(self) -> ExitStatus | None:
        """How it ended, or ``None`` while it runs."""
        status = self._status()
        if status is not None and self._ended_because is not None:
            return ExitStatus(status.code, status.signal, f"{status}: {self._ended_because}")
        return status

    def _status(self) -> ExitStatus | None:
        if self.popen is not None:
            code = self.popen.poll()
            return ExitStatus.from_returncode(code) if code is not None else None
        if self._ref is None or not self._ref.alive():
            if self._ended_because is not None:
                return ExitStatus(None, signal.SIGKILL, "killed by SIGKILL")
            return ExitStatus.unknown()
        return None

    def threads(self) -> dict[str, str] | None:
        """Its threads, thread id -> name (``fc_api``, ``fc_vcpu 0``...); ``None`` once gone."""
        return VmmThreads(self.pid).names()

    def end_hung(self, why: str) -> bool:
        """SIGKILL a VMM that cannot exit by itself, and remember ``why`` for its exit status."""
        self._ended_because = why
        return self.signal(signal.SIGKILL)

    @property
    def running(self) -> bool:
        """Whether the process is still running."""
        return self.exit_status is None

    def signal(self, sig: int) -> bool:
        """Send ``sig``; ``False`` if the process was already gone."""
        if self._ref is not None:
            return self._ref.signal(sig)
        return self.running and _kill(self.pid, sig)


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


#: How often a pending request or a wait looks at the VMM's threads (seconds).
WATCH_INTERVAL = 0.05
#: How long a stopped VM's VMM (vCPU threads gone, API thread still there) may take
#: to exit before it counts as hung in Firecracker's shutdown deadlock (seconds).
HUNG_AFTER = 0.5

_HUNG = (
    "firec ended it: its guest had stopped, but Firecracker hung while exiting (its API "
    "thread waited forever for the answer to a request that reached it as the VMM was "
    "stopping, a Firecracker defect of 1.0 to 1.14)"
)


class ExitWatch:
    """Whether a VMM is running, stopping, gone, or hung while stopping.

    Firecracker's threads tell it: ``fc_vcpu N`` run the guest, ``fc_api``
    serves the API. When the guest stops (it powers off, or resets), the VMM
    thread joins the vCPU threads, leaves its event loop, and has the API
    thread end. An API request read in between is handed to the VMM thread,
    which no longer answers: the API thread waits forever, and the main
    thread waits for it. Such a VMM, vCPU threads gone but ``fc_api`` still
    there for :data:`HUNG_AFTER` seconds, can never exit: :meth:`check` ends
    it (SIGKILL) and its exit status says why.

    Only a VMM seen with vCPU threads once can count as stopping: before
    its guest starts it has none either.

    Attributes:
        process: the VMM.
        interval: how often a pending request calls :meth:`check` (seconds).
    """

    def __init__(
        self, process: VmmProcess, *, name: str = "", interval: float = WATCH_INTERVAL
    ) -> None:
        self.process = process
        self.name = name or f"VMM pid {process.pid}"
        self.interval = interval
        self._threads = VmmThreads(process.pid)
        self._vcpus: list[str] = []  # the ids of its vCPU threads, once seen
        self._api: str | None = None  # and of its API thread
        self._stopping_since: float | None = None

    def _look(self) -> tuple[bool, bool]:
        """(whether it is stopping, whether its API thread is there), from its threads.

        Once the vCPU threads are known, whether they still exist is one
        ``stat`` (reading every thread's name costs ~10 us a thread).
        """
        threads = self._threads
        if not self._vcpus:
            names = threads.names()
            if names is None:
                return True, False  # gone
            self._vcpus = threads.vcpus(names)
            self._api = threads.api(names)
            return False, self._api is not None  # not started (no vCPU yet), or running
        if any(threads.exists(vcpu) for vcpu in self._vcpus):
            self._stopping_since = None
            return False, True
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        if self._api is None:  # not seen at first: look again (rare: only while it stops)
            self._api = threads.api(threads.names() or {})
        return True, self._api is not None and threads.exists(self._api)

    def observe(self) -> None:
        """Look at the VMM's threads now (say, right after its guest started)."""
        self._look()

    def stopping(self) -> bool:
        """Whether the VMM has exited or is exiting: its guest has stopped (see the class)."""
        return self.process.exit_status is not None or self._look()[0]

    def check(self) -> str | None:
        """Why a request to this VMM will never be answered, or ``None`` while it may be.

        The VMM exited; or it hangs while stopping (see the class), and is
        ended here.
        """
        status = self.process.exit_status
        if status is not None:
            return f"the VMM exited ({status})"
        stopping, api = self._look()
        since = self._stopping_since
        if stopping and api and since is not None and time.monotonic() - since >= HUNG_AFTER:
            _log.warning("microVM %s: %s", self.name, _HUNG)
            self.process.end_hung(_HUNG)
            return "the VMM hung while exiting; firec ended it"
        return None


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


def process_args(pid: int) -> list[str]:
    """The command line of process ``pid`` (empty when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]]


def find_vmm_pid(socket_path: str) -> int | None:
    """The pid of the VMM started with ``--api-sock socket_path``, from the process table."""
    wanted = os.fsencode(socket_path)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == b"--api-sock" and value == wanted:
                return int(entry.name)
    return None


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
