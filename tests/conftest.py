"""Test backends: firec's emulator always, a real Firecracker where one is named.

Every test that takes the ``vmm`` fixture runs twice: against the emulator
(``[emulator]``), and against the binary named by ``FIRECRACKER_BIN``
(``[firecracker]``), which skips with a reason when the variable is unset.
``JAILER_BIN`` names the jailer for the jailed tests.

The guest agent's tests share ``agent_bin`` (the agent binary), ``agent``
(one running as a service on a Unix socket, ``tests/agent_support.py``) and
``client`` (a client of it); a test module may define its own instead.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import firec
from firec.agent import Client
from firec.vm._launch import socket_accepts
from tests import host_tools
from tests.agent_support import RunningAgent, agent_path, run_agent
from tests.host_tools import pytest_configure, pytest_runtest_setup
from tests.support import (
    emulator_wrapper,
    firecracker_bin,
    jailer_wrapper,
    require_jailer,
)

BACKENDS = ("emulator", "firecracker")

__all__ = ["pytest_configure", "pytest_runtest_setup"]  # the host tools rule (host_tools.py)

# Every Machine keeps a host record (firec.host.registry): the suite's go to a directory of its own
# (its subprocesses inherit it), not to the host's /run/firec/state.
TEST_STATE_DIR = Path(
    os.environ.setdefault("FIREC_STATE_DIR", tempfile.mkdtemp(prefix="firec-test-state-"))
)


def known_firecracker_defect(exc: BaseException) -> str | None:
    """Why ``exc`` is a defect of the real Firecracker release under test, if it is one.

    Measured on these hosts, not firec's doing:

    * 1.4's userfaultfd library refuses this kernel's newer UFFDIO ioctls, so a
      Uffd restore cannot work (firec says so, see ``AsyncMachine._load``).

    (1.0's lost API requests after boot are firec's to avoid, and it does: see
    ``firec.api._request.loses_requests``; a timeout there is a failure.)
    """
    binary = firecracker_bin()
    if binary is None:
        return None
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    for error in chain:
        if isinstance(error, firec.errors.SnapshotError) and "Uffd backend on this kernel" in str(
            error
        ):
            return f"Firecracker's userfaultfd support does not work on this kernel: {error}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Report a test that failed on a known defect of the real Firecracker as xfailed."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if call.when != "call" or not report.failed or call.excinfo is None:
        return
    params = getattr(item, "callspec", None)
    real = ("firecracker", "real")  # the backend fixture here; test_emulator's own parameter
    if params is None or not any(value in real for value in params.params.values()):
        return
    reason = known_firecracker_defect(call.excinfo.value)
    if reason is not None:
        report.outcome = "skipped"
        report.wasxfail = reason


def vmm_command(backend: str) -> list[str]:
    """The command that starts a VMM of ``backend`` (without its flags)."""
    if backend == "emulator":
        return [sys.executable, "-m", "firec.testing.emulator"]
    path = firecracker_bin()
    if path is None:
        pytest.skip("FIRECRACKER_BIN is not set: no real Firecracker to run this test against")
    if not os.access(path, os.X_OK):
        pytest.fail(f"FIRECRACKER_BIN={path} is not executable")
    return [path]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend this test runs against."""
    name: str = request.param
    vmm_command(name)  # skips now, with the reason, when the backend is missing
    return name


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (a Unix socket path must fit 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="firec-t-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Vmm:
    """A VMM process started for a test, with its API socket."""

    backend: str
    socket_path: str
    process: subprocess.Popen[bytes]
    workdir: Path
    extra: dict[str, str] = field(default_factory=dict)

    def read_stdout_until(self, text: str, timeout: float = 10.0) -> str:
        """Read the VMM's stdout (serial console and log lines) until ``text`` shows up."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"{text!r} did not appear on stdout within {timeout}s: {seen!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"stdout ended before {text!r} appeared: {seen!r}")
            seen += chunk
        return seen.decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_vmm(backend: str, workdir: Path, *args: str) -> Vmm:
    """Start a VMM of ``backend`` serving its API in ``workdir``; wait until it listens.

    Firecracker creates the socket file before it listens on it: a test that
    connected as soon as the file is there could be refused.
    """
    socket_path = str(workdir / "api.sock")
    log_path = workdir / "vmm.log"  # keeps stdout for the serial console alone
    log_path.touch()
    command = [
        *vmm_command(backend),
        *("--api-sock", socket_path, "--id", "firec-test", "--log-path", str(log_path)),
        *args,
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    vmm = Vmm(backend, socket_path, process, workdir)
    deadline = time.monotonic() + 10
    while not socket_accepts(Path(socket_path)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate(timeout=10)
            pytest.fail(f"{backend} did not listen on its API socket: {err.decode()}")
        time.sleep(0.005)
    return vmm


@pytest.fixture
def vmm(backend: str, short_tmp: Path) -> Iterator[Vmm]:
    """A fresh VMM (emulator or real Firecracker), stopped after the test."""
    started = start_vmm(backend, short_tmp)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def guest_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """firec's tiny test guest, built once per session."""
    from firec.testing.guest import build_test_guest

    host_tools.require("cc")
    return build_test_guest(tmp_path_factory.mktemp("guest"))


@pytest.fixture
def vmm_binary(backend: str, short_tmp: Path) -> Path:
    """The Firecracker executable of the backend: the real one, or the emulator."""
    if backend == "firecracker":
        path = firecracker_bin()
        assert path is not None
        return Path(path)
    return emulator_wrapper(short_tmp)


@pytest.fixture
def jailer_binary(backend: str, short_tmp: Path) -> Path:
    """The jailer of the backend: ``JAILER_BIN``, or firec's emulated jailer."""
    if backend == "firecracker":
        return require_jailer()
    return jailer_wrapper(short_tmp)


@pytest.fixture(scope="module")
def agent_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guest agent's binary (built once per module if the install did not)."""
    return agent_path(tmp_path_factory)


@pytest.fixture
def agent(agent_bin: Path, tmp_path: Path) -> Iterator[RunningAgent]:
    """The agent as a service on a Unix socket in ``tmp_path``, stopped after the test."""
    with run_agent(agent_bin, tmp_path) as running:
        yield running


@pytest.fixture
def client(agent: RunningAgent) -> Iterator[Client]:
    """A client of :func:`agent`, closed after the test."""
    with agent.client() as c:
        yield c


@pytest.fixture
def held_reaper(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """firec's reaper of exited VMMs (``firec.vm._reaping``) waits for the returned event
    before it reaps anything: what waits for a reap would then hang."""
    from firec.vm import _reaping

    release = threading.Event()
    reap = _reaping._reap

    def held(pidfd: int) -> None:
        release.wait(30)
        reap(pidfd)

    monkeypatch.setattr(_reaping, "_reap", held)
    try:
        yield release
    finally:
        release.set()
