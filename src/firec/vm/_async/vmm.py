"""The VMM process under a microVM: spawned, waited for until its API answers, watched as it ends.

The lowest layer of :class:`firec.AsyncMachine`
(:mod:`firec.vm._async.machine` puts the layers together): a machine's state
(its config, client and process, the readers of Firecracker's output, what it
owns), the spawn and the wait for the API, the watch on the process, and the
facts anyone may read (pid, socket, exit status, Firecracker's last lines).
The layers above: :mod:`~firec.vm._async.lifecycle` (create, boot, stop,
delete), :mod:`~firec.vm._async.snapshots` (snapshot, restore, clone) and
:mod:`~firec.vm._async.devices` (vsock, drives, metrics at runtime).
"""

# This file is the one source of both flavours: vmm.py (under the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firec.api._async.client import AsyncClient
from firec.api.versions import Version
from firec.errors import ConfigError, MachineError, TransportError
from firec.snapshots.snapshot import Snapshot
from firec.vm._async import io
from firec.vm._launch import Launch, console_pipe, full_outputs, plan, socket_accepts, spawn
from firec.vm._reaping import exit_code
from firec.vm._registry.claim import Registration
from firec.vm.binaries import remember_version, remembered_version
from firec.vm.config import Config
from firec.vm.guest_agent import hide_token
from firec.vm.logs import LogForwarder
from firec.vm.metrics import MetricsForwarder
from firec.vm.process import ExitStatus, ExitWatch, VmmProcess
from firec.vm.streams import AsyncLineReader, tail_lines

if TYPE_CHECKING:
    from firec.network import VMNetwork
    from firec.snapshots.uffd import UffdHandler

__all__ = ["MachineVmm"]

_log = logging.getLogger("firec.machine")

#: Seconds to wait for the API socket to answer after spawning.
READY_TIMEOUT = 10.0
#: Seconds a guest gets to stop after SendCtrlAltDel, then Firecracker after SIGTERM.
SHUTDOWN_TIMEOUT = 5.0
TERM_TIMEOUT = 3.0
#: How many times a socket that refuses is tried again at once before backing off.
QUICK_RETRIES = 3
#: How many of Firecracker's last lines an error shows.
TAIL_LINES = 20
#: Seconds :meth:`AsyncMachine.state` waits for a VMM it found exiting to be gone.
EXIT_GRACE = 1.0
#: Seconds between two looks at a waited-for VMM (is it hung while stopping?).
WAIT_LOOK = 0.25
#: Seconds between two looks, from :meth:`AsyncMachine.state`, at the space left for
#: Firecracker's output (a look costs ~30 us; state() may be polled).
SPACE_LOOK = 1.0


def _remembered_version(config: Config) -> Version | None:
    """The version ``config``'s Firecracker binary answered with before, in this process."""
    try:
        return remembered_version(config.exec_file)
    except ConfigError:  # no binary: the spawn says so
        return None


class MachineVmm:
    """A microVM's VMM process, and what firec keeps of it: the base of :class:`firec.AsyncMachine`.

    It spawns the VMM (``_spawn``) and waits until its API answers, follows
    its log and metrics, watches it end (``_exit_watch``), and says why it
    failed, with Firecracker's last lines (``_failure``).
    """

    def __init__(
        self,
        config: Config,
        *,
        launch: Launch | None = None,
        client: AsyncClient | None = None,
        process: VmmProcess | None = None,
    ) -> None:
        self.config = config
        self._launch = launch or plan(config)
        self.client = client or AsyncClient(
            self._launch.socket_path,
            max_payload_size=config.max_payload_size,
            version=_remembered_version(config),
        )
        self._process = process
        self._owned = False  # whether firec made this VM's files (create) or not (connect)
        self._console_reader: AsyncLineReader | None = None
        self._readers: list[AsyncLineReader] = []
        self._network: VMNetwork | None = None
        self._log: LogForwarder | None = None
        self._metrics: MetricsForwarder | None = None
        self._deleted = False
        self._vsock_listeners: list[io.VsockListener] = []
        self._forwarded: dict[int, Any] = {}
        self._snapshot_base: Snapshot | None = None  # what a diff snapshot applies to
        self._forks = 0  # how many times this VM was forked (names its fork snapshots)
        self._uffd: UffdHandler | None = None  # firec's page-fault handler of a Uffd restore
        self._registration: Registration | None = None  # its host record (Config.host_record)
        self._full: set[Path] = set()  # output files on a full filesystem, already warned of
        self._space_looked = -SPACE_LOOK  # when (time.monotonic()) the space was last looked at
        self._watch: ExitWatch | None = None  # of self._process: running, stopping, hung?
        self._exit_watch()

    async def _spawn(self, ready_timeout: float, *, ask: bool = True) -> None:
        # The readers first: a thread (or the loop's reader) that starts while the
        # VMM execs competes with it and with this thread for the CPU and the GIL
        # (~0.6 ms of a boot on two cores); before the spawn it costs nothing.
        pipe = console_pipe(self._launch)
        try:
            self._start_readers(pipe[0] if pipe is not None else None)
            popen = spawn(self._launch, pipe[1] if pipe is not None else None)
        finally:
            if pipe is not None:  # the console reader and the VMM hold their own copies
                os.close(pipe[0])
                os.close(pipe[1])
        self._process = VmmProcess(popen.pid, popen)
        if self.config.jailer is None:  # Firecracker itself (jailed: found from the socket)
            self.client.vmm_pid = popen.pid
        deadline = time.monotonic() + ready_timeout
        jailer = self.config.jailer
        if jailer is not None and jailer.new_pid_ns:
            await self._adopt_from_pidfile(popen, deadline)
        self._exit_watch()
        self._check_space()  # while the VMM starts, not after: its files are all there now
        # A binary that told its version before needs no GET /: a socket that takes
        # connections is then ready enough (the caller's first request follows).
        known = self.client.known_version
        await self._wait_ready(deadline, ready_timeout, ask=ask and known is None)
        if known is None and self.client.known_version is not None:
            remember_version(self.config.exec_file, self.client.known_version)
        if self._registration is not None:
            # The pid goes into the host record once the VMM answers, not right after the
            # spawn: reading a process's start time (/proc/<pid>/stat) waits until its
            # exec is over, ~0.7 ms a boot would spend waiting. Until then a record
            # without a pid is still reaped: gc finds its VMM by the record's command line.
            networked = self.config if self._network is not None else None
            self._registration.spawned(self._launch, self.pid, attached=networked)

    def _start_readers(self, console: int | None) -> None:
        """Follow the console (``console``: its pipe's read end), the log and the metrics."""
        if console is not None:
            wanted = self._launch.console
            if wanted.on_output is not None:
                self._console_reader = AsyncLineReader(
                    console, wanted.on_output, follow=False, lines=False
                )
            else:
                assert wanted.on_line is not None
                self._console_reader = AsyncLineReader(console, wanted.on_line, follow=False)
            self._console_reader.start()
            self._readers.append(self._console_reader)
        self._follow_outputs()

    def _follow_outputs(self) -> None:
        """Forward the log (when the caller chose where it goes) and the metrics."""
        launch, config = self._launch, self.config
        if config.log_path is not None or config.log_fifo is not None:
            # Firecracker logs local time (in a jail, without /etc/localtime, UTC);
            # all VMs share the one "firec.vmm" logger
            self._log = LogForwarder(vm_id=self.vm_id, tz=launch.layout.log_timezone)
            self._readers.append(AsyncLineReader(launch.log_path, self._log))
        if launch.metrics_path is not None:
            self._metrics = MetricsForwarder()
            self._readers.append(AsyncLineReader(launch.metrics_path, self._metrics))
        for reader in self._readers:
            if reader is not self._console_reader:
                reader.start()

    async def _adopt_from_pidfile(self, jailer: Any, deadline: float) -> None:
        """Under ``--new-pid-ns`` the jailer exits; Firecracker's pid is in its pidfile."""
        pidfile = self._launch.layout.pidfile(self.config.exec_file)
        assert pidfile is not None  # a jailer's
        delay = 0.001
        while True:
            if pidfile.exists() and pidfile.read_text().strip().isdigit():
                self._process = VmmProcess(int(pidfile.read_text()))
                await io.wait_pid(jailer.pid, max(0.0, deadline - time.monotonic()), jailer)
                return
            code = exit_code(jailer)
            if code not in (None, 0) or time.monotonic() > deadline:
                raise self._failure(
                    f"the jailer wrote no pidfile ({pidfile})",
                    ExitStatus.from_returncode(code) if code is not None else None,
                )
            await io.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _wait_ready(self, deadline: float, ready_timeout: float, *, ask: bool = True) -> None:
        # ask=False: a socket that takes connections is enough (the caller's request follows).
        started = time.monotonic()
        socket_path = self._launch.socket_path
        refusals = 0
        while True:
            status = self._process.exit_status if self._process else None
            if status is not None:
                raise self._failure("Firecracker exited before its API was ready", status)
            if not ask:
                accepts = socket_accepts(socket_path)  # None: not there yet
                if accepts:
                    return
            else:  # no probe connection first: the request's own says whether it listens
                accepts = os.path.exists(socket_path) or None
                if accepts:
                    try:
                        await self.client.get_instance_info(timeout=1.0)
                        return
                    except TransportError:
                        accepts = False  # (refused: bound, not listening yet)
            if time.monotonic() > deadline:
                raise self._failure(
                    f"Firecracker's API socket {socket_path} was not ready "
                    f"within {ready_timeout:g}s",
                    None,
                )
            waited = time.monotonic() - started
            if accepts is None:  # woken as soon as it appears (~0.5 ms after the spawn)
                await io.pause(waited, appears=socket_path)
            elif accepts is False and refusals < QUICK_RETRIES:
                # Firecracker binds, then listens a moment later: a moment that may be
                # spent waiting for this very CPU
                refusals += 1
                await io.yield_cpu()
            else:
                await io.pause(waited)

    def _failure(self, what: str, status: ExitStatus | None) -> MachineError:
        message = f"microVM {self.config.vm_id}: {what}"
        if status is not None:
            message += f" ({status})"
        code = status.code if status is not None else None
        return MachineError(message, log_tail=self.last_lines(), exit_code=code)

    def _check_space(self, *, every: float = 0.0) -> None:
        """Warn when Firecracker's output files sit on a full filesystem (once while it lasts).

        Firecracker ignores its write errors: on a full disk the console and
        the log are lost without a word. This says it, naming the files, on
        the logger ``firec.vm``; called after the VMM starts, when
        :meth:`wait` returns, and from :meth:`state` (at most every ``every`` s).
        """
        now = time.monotonic()
        if not self._owned or now - self._space_looked < every:
            return  # a connected VM's files are not known for sure
        self._space_looked = now
        full = full_outputs(self._launch)
        fresh = [(what, path, free) for what, path, free in full if path not in self._full]
        self._full = {path for _, path, _ in full}
        if fresh:
            listed = "; ".join(f"{what} ({path}, {free} bytes free)" for what, path, free in fresh)
            _log.warning(
                "microVM %s: no space left for %s: what Firecracker writes there is lost "
                "until space is freed",
                self.vm_id,
                listed,
            )

    def _exit_watch(self) -> ExitWatch | None:
        """The :class:`~firec.vm.process.ExitWatch` of the VMM process, given to the client."""
        process = self._process
        if process is None:
            return None
        if self._watch is None or self._watch.process is not process:
            self._watch = ExitWatch(process, name=self.vm_id)
            self.client.give_up_when(self._watch)
        return self._watch

    async def _exits(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the VMM to be gone (ending it if it hangs stopping)."""
        process, watch = self._process, self._exit_watch()
        if process is None or watch is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if await io.wait_pid(process.pid, max(0.0, min(left, watch.interval)), process.popen):
                return True
            watch.check()
            if left <= 0:
                return not process.running

    # -- facts -----------------------------------------------------------------------

    @property
    def vm_id(self) -> str:
        """The microVM's id."""
        return self.config.vm_id

    @property
    def pid(self) -> int | None:
        """The Firecracker process id (from the jailer's pidfile under ``--new-pid-ns``)."""
        return self._process.pid if self._process is not None else None

    @property
    def socket_path(self) -> Path:
        """The API socket on the host."""
        return self._launch.socket_path

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the VMM ended, or ``None`` while it runs."""
        return self._process.exit_status if self._process is not None else None

    @property
    def console_path(self) -> Path | None:
        """The file the serial console goes to, when it goes to a file."""
        return self._launch.console_path

    @property
    def log_path(self) -> Path:
        """Firecracker's log (a file, or a fifo) on the host."""
        return self._launch.log_path

    @property
    def launch(self) -> Launch:
        """Where everything of this VM is, and its command line."""
        return self._launch

    def last_lines(self, n: int = TAIL_LINES) -> list[str]:
        """Firecracker's last lines: the last ``n`` of its log, its stderr and the console.

        A guest agent's token in them is hidden (:func:`firec.vm.guest_agent.hide_token`).
        """
        lines: list[str] = self._log.recent(n) if self._launch.log_is_fifo and self._log else []
        for path in (self._launch.log_path, self._launch.stderr_path):
            if path is not None and path.is_file():
                lines += tail_lines(path, n)
        return [hide_token(line) for line in lines] + self.console_lines(n)

    def console_lines(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` lines of the guest's serial console, when it goes to a file (else none).

        A guest agent's token in them is hidden (the agent's is on the kernel
        command line, which a guest may print).
        """
        path = self._launch.console_path
        if path is None or not path.is_file():
            return []
        return [hide_token(line) for line in tail_lines(path, n)]
