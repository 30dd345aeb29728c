"""The VMM process: which pid it is, whether it runs, and how it ended.

Firecracker runs as our child, except under the jailer's ``--new-pid-ns``
(the jailer forks it into a new PID namespace and exits; the pid is then read
from the jailer's pidfile) and after :meth:`firec.Machine.connect` (someone
else started it). :class:`VmmProcess` hides the difference; waiting happens
in ``vm._sync.io`` / ``vm._async.io``.

The views of processes that rooms below this one use too (:class:`ProcessRef`,
:class:`VmmThreads`, :class:`VmmThreadWatch`, :func:`boot_id`, :func:`socket_peer_pid`,
:func:`wait_until`) live in ``firec._proc``, and are importable from here as before.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from firec._proc import (
    ProcessRef,
    VmmThreads,
    VmmThreadWatch,
    _kill,
    boot_id,
    command_lines,
    socket_peer_pid,
    wait_until,
)
from firec.vm._reaping import exit_code

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
            code = exit_code(self.popen)
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
    for pid, argv in command_lines():
        for flag, value in itertools.pairwise(argv):
            if flag == b"--api-sock" and value == wanted:
                return pid
    return None
