"""``Emulator``: run the Firecracker emulator as a child process on a private socket."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from firec.errors import MachineError

__all__ = ["Emulator"]


class Emulator:
    """A running emulator process, for tests: ``with Emulator("1.14") as emu: emu.socket_path``.

    The process serves the API of the chosen Firecracker release on ``socket_path``
    (inside a private temporary directory) and its stdout (log lines and the
    guest's serial console) and stderr are kept in files, see :attr:`stdout`.
    Leaving the ``with`` block (or :meth:`stop`) kills the process if still
    running and removes the directory, socket included.

    Args:
        version: the emulated release (``"1.14"``, ``"1.14.2"``); None: the default.
        args: more Firecracker command-line flags (``["--id", "vm1"]``).
        api: False starts it with ``--no-api`` (then pass ``--config-file``).
        startup_timeout: seconds to wait for the API socket.
    """

    def __init__(
        self,
        version: str | None = None,
        *,
        args: Sequence[str] = (),
        api: bool = True,
        startup_timeout: float = 10.0,
    ) -> None:
        self.version = version
        self.args = list(args)
        self.api = api
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="firec-emu-"))
        self.socket_path = str(self.workdir / "firecracker.socket")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        """The command line used to start the emulator."""
        cmd = [sys.executable, "-m", "firec.testing.emulator"]
        if self.version is not None:
            cmd += ["--emulate-version", self.version]
        if self.api:
            cmd += ["--api-sock", self.socket_path]
        else:
            cmd.append("--no-api")
        return cmd + self.args

    @property
    def stdout(self) -> str:
        """Everything the emulator wrote on stdout so far (logs and serial console)."""
        return self._read("stdout")

    @property
    def stderr(self) -> str:
        """Everything the emulator wrote on stderr so far."""
        return self._read("stderr")

    def _read(self, name: str) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Emulator:
        """Spawn the process and wait for its API socket.

        Raises:
            MachineError: the process exited or the socket did not appear in time.
        """
        with open(self.workdir / "stdout", "wb") as out, open(self.workdir / "stderr", "wb") as err:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir
            )
        if not self.api:
            return self
        deadline = time.monotonic() + self.startup_timeout
        while not os.path.exists(self.socket_path):
            code = self.process.poll()
            if code is not None:
                tail = (self.stdout + self.stderr).splitlines()[-10:]
                self.stop()
                raise MachineError(
                    f"the Firecracker emulator exited with status {code} before serving its API",
                    log_tail=tail,
                    exit_code=code,
                )
            if time.monotonic() > deadline:
                tail = (self.stdout + self.stderr).splitlines()[-10:]
                self.stop()
                raise MachineError(
                    f"the Firecracker emulator did not create {self.socket_path} within "
                    f"{self.startup_timeout} s",
                    log_tail=tail,
                )
            time.sleep(0.005)
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; returns its exit status."""
        assert self.process is not None, "start() first"
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """Kill the process (SIGTERM, then SIGKILL) and remove the temporary directory."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
