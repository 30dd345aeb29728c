"""An exited child's status is read without reaping it; one thread reaps it (firec.vm._reaping)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from firec.vm._reaping import exit_code
from tests.support import zombie


def _exited(pid: int) -> None:
    """Wait (without reaping) until child ``pid`` has exited."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` is reaped (no longer in ``/proc``) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_running_child_has_no_exit_code_and_an_exited_one_its_own() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 0.2; exit 3"])
    assert exit_code(child) is None
    _exited(child.pid)
    assert exit_code(child) == 3
    assert (child.returncode, child.poll(), child.wait(timeout=0)) == (3, 3, 3)
    assert _gone(child.pid), "the reaper thread did not reap it"


def test_a_killed_child_reads_as_its_signal() -> None:
    child = subprocess.Popen(["sleep", "60"])
    child.send_signal(signal.SIGKILL)
    _exited(child.pid)
    assert exit_code(child) == -signal.SIGKILL
    assert _gone(child.pid)


def test_the_exit_code_does_not_wait_for_the_reap(held_reaper: threading.Event) -> None:
    child = subprocess.Popen(["true"])
    _exited(child.pid)
    assert exit_code(child) == 0  # while the reaper is held
    assert Path(f"/proc/{child.pid}").exists() and zombie(child.pid)  # not reaped yet
    assert child.poll() == 0  # Popen reads as done, and does not reap it either
    assert zombie(child.pid) and Path(f"/proc/{child.pid}").exists()
    held_reaper.set()
    assert _gone(child.pid)


def test_a_child_reaped_by_another_waiter_still_says_its_code() -> None:
    child = subprocess.Popen(["sh", "-c", "exit 5"])
    _exited(child.pid)
    assert child.wait() == 5  # reaped by Popen itself
    assert exit_code(child) == 5
