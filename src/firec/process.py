"""The VMM process: which pid it is, whether it runs, and how it ended.

Firecracker runs as our child, except under the jailer's ``--new-pid-ns``
(the jailer forks it into a new PID namespace and exits; the pid is then read
from the jailer's pidfile) and after :meth:`firec.Machine.connect` (someone
else started it). :class:`VmmProcess` hides the difference; waiting happens
in ``_sync_io`` / ``_async_io``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from dataclasses import dataclass

__all__ = ["FIRECRACKER_EXIT_CODES", "ExitStatus", "VmmProcess", "find_vmm_pid"]

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
        self._exited = False

    @property
    def exit_status(self) -> ExitStatus | None:
        """How it ended, or ``None`` while it runs."""
        if self.popen is not None:
            code = self.popen.poll()
            return ExitStatus.from_returncode(code) if code is not None else None
        if self._exited or not _alive(self.pid):
            self._exited = True
            return ExitStatus.unknown()
        return None

    @property
    def running(self) -> bool:
        """Whether the process is still running."""
        return self.exit_status is None

    def signal(self, sig: int) -> bool:
        """Send ``sig``; ``False`` if the process was already gone."""
        if not self.running:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


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
