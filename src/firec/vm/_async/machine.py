"""A microVM's whole life, with asyncio: spawn, configure, boot, pause, stop, clean up.

Example (runs as is: firec's emulator and its tiny test guest stand in for
Firecracker and a kernel)::

    import asyncio, firec
    from firec.testing import emulator_binary
    from firec.testing.guest import build_test_guest

    async def main() -> None:
        config = (
            firec.Config.builder(None, build_test_guest())
            .firecracker_binary(emulator_binary())
            .build()
        )
        machine = await firec.AsyncMachine.create(config)
        async with machine:
            await machine.start()
            print(await machine.state())  # MachineState.RUNNING
            await machine.pause()
            await machine.resume()
        # leaving the block shut the VM down and removed everything it made

    asyncio.run(main())
"""

# This file is the one source of both machines: machine.py (the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from firec.api import models
from firec.api._async.client import AsyncClient
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, payload_limit_in_args
from firec.errors import (
    APIError,
    ConfigError,
    ConnectError,
    FirecError,
    MachineError,
    SnapshotError,
    TimeoutError,
    TransportError,
)
from firec.snapshots.snapshot import PerClone, Snapshot
from firec.vm import vsock
from firec.vm._async import io
from firec.vm._launch import (
    Launch,
    api_calls,
    attach_network,
    attached,
    cleanup,
    find_socket,
    full_outputs,
    plan,
    prepare,
    socket_accepts,
    spawn,
)
from firec.vm._registry.claim import Registration, Registry
from firec.vm._restore import (
    attach_restore_network,
    clone_plans,
    first_failure,
    plan_restore,
    prepare_restore,
)
from firec.vm._snapshot_target import SnapshotTarget
from firec.vm.config import BootMethod, Config
from firec.vm.logs import LogForwarder
from firec.vm.metrics import MetricsForwarder, MetricsSnapshot
from firec.vm.process import ExitStatus, ExitWatch, VmmProcess, find_vmm_pid, process_args
from firec.vm.state import MachineState
from firec.vm.streams import AsyncLineReader, tail_lines

if TYPE_CHECKING:
    from firec.network import VMNetwork
    from firec.snapshots.uffd import UffdHandler

__all__ = ["AsyncMachine"]

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


class AsyncMachine:
    """One microVM and its VMM process.

    Make one with :meth:`create` (spawn a new VMM) or :meth:`connect` (attach
    to a running one). As an async context manager it always cleans up:
    leaving the block stops the VMM and removes everything firec made.

    Attributes:
        config: the configuration it was made from.
        client: the low-level API client of its socket.
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
            self._launch.socket_path, max_payload_size=config.max_payload_size
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
        self._uffd: UffdHandler | None = None  # firec's page-fault handler of a Uffd restore
        self._registration: Registration | None = None  # its host record (Config.host_record)
        self._full: set[Path] = set()  # output files on a full filesystem, already warned of
        self._space_looked = -SPACE_LOOK  # when (time.monotonic()) the space was last looked at
        self._watch: ExitWatch | None = None  # of self._process: running, stopping, hung?
        self._exit_watch()

    # -- making one ------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        config: Config,
        *,
        ready_timeout: float = READY_TIMEOUT,
        registry: Registry | Registration | None = None,
    ) -> Self:
        """Spawn the VMM of ``config`` (plain or jailed) and wait until its API answers.

        With :attr:`~firec.vm.config.BootMethod.CONFIG_FILE` the VM boots right
        away. The VM's id is claimed first, in one atomic step, with a host
        record in ``registry`` (default: :class:`~firec.host.registry.Registry`'s
        own directory; see :attr:`Config.host_record <firec.vm.config.Config.host_record>`),
        unless ``registry`` is a :class:`~firec.host.registry.Registration` that
        claimed it already.

        Raises:
            ConfigError: a bad config (before anything is made).
            InUseError: a VM with this id runs, or is being started, on this
                host; that VM is left exactly as it was.
            MachineError: the VMM did not come up (with Firecracker's own last
                lines).
            UnsupportedError: a Firecracker older than 1.0 (firec needs 1.0 or
                newer).

        Either way nothing is left behind.
        """
        config.validate()
        registration = cls._claim(config, registry)
        network: VMNetwork | None = None
        try:
            if any(i.network is not None for i in config.network_interfaces):
                config, network = await io.run_blocking(attach_network, config)
            try:
                machine = cls(config)
            except BaseException:
                if network is not None:
                    await io.run_blocking(network.teardown)
                raise
        except BaseException:
            if registration is not None:
                registration.release()
            raise
        machine._owned = True
        machine._network = network
        machine._registration = registration
        try:
            prepare(machine._launch)  # links, fifos, small files: no thread needed
            await machine._spawn(ready_timeout)
        except BaseException:
            await machine.delete()
            raise
        machine._check_space()
        return machine

    @staticmethod
    def _claim(
        config: Config, registry: Registry | Registration | None, origin: str | None = None
    ) -> Registration | None:
        """Claim ``config``'s id with a host record (unless ``host_record`` is off)."""
        if isinstance(registry, Registration):
            return registry  # claimed by the caller
        if not config.host_record:
            return None
        # a few small files under a lock held for a moment: no thread needed
        return Registration.claim(registry or Registry(), config, plan(config), origin=origin)

    @classmethod
    async def connect(
        cls,
        target: str | os.PathLike[str],
        *,
        pid: int | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> Self:
        """Attach to a VMM that is already running, by its API socket or its vm id.

        An id is looked up where firec puts sockets: ``<runtime dir>/<id>/``
        for plain VMs, ``/srv/jailer/*/<id>/root/run/`` for jailed ones.
        ``pid`` is found from the process table when not given. :meth:`delete`
        on a connected machine stops the VMM but removes only its socket:
        firec did not make the rest.
        """
        socket_path = find_socket(target)
        client = AsyncClient(socket_path, timeout=timeout)
        try:
            info = await client.get_instance_info()  # refuses a Firecracker before 1.0
        except FirecError:
            await client.aclose()
            raise
        config = Config(vm_id=info.id, kernel_image=Path("/"), socket_path=socket_path)
        pid = pid or find_vmm_pid(os.fspath(socket_path))
        client.vmm_pid = pid
        if pid is not None:  # its --http-api-max-payload-size, when it was given one
            limit = payload_limit_in_args(process_args(pid))
            client.max_payload_size = limit if limit is not None else DEFAULT_MAX_PAYLOAD_SIZE
        process = VmmProcess(pid) if pid is not None else None
        return cls(config, launch=attached(config), client=client, process=process)

    @classmethod
    async def restore(
        cls,
        snapshot: Snapshot,
        config: Config | None = None,
        *,
        resume: bool = True,
        backend: models.MemoryBackendType | str = models.MemoryBackendType.FILE,
        uffd_handler: UffdHandler | str | os.PathLike[str] | None = None,
        network_overrides: Mapping[str, str] | None = None,
        vsock_override: str | os.PathLike[str] | None = None,
        track_dirty_pages: bool | None = None,
        ready_timeout: float = READY_TIMEOUT,
        registry: Registry | Registration | None = None,
    ) -> Self:
        """Spawn a new VMM (plain or jailed) and load ``snapshot`` into it.

        ``config`` gives the new VM's id and how to run it (binary, jailer,
        workdir, logs, console); its devices come from the snapshot. Without
        one, :meth:`Snapshot.config` derives one with a new id. An interface
        of ``config`` with one of the snapshot's ids brings its tap and its
        network plan (set up as by :meth:`create`, torn down with the VM); a
        tap other than the snapshot's becomes a network override. A drive of
        ``config`` with one of the snapshot's ids brings its file (jailed
        restores: linked in at the snapshot's path, under the rules of
        :meth:`firec.vm.layout.Layout.bring_in`). Example::

            snap = machine.snapshot("/srv/snaps/base")
            copy = await AsyncMachine.restore(snap, network_overrides={"eth0": "tap7"})

        Args:
            snapshot: what to load (its files are only read, never changed; in a
                jail they are hard-linked in when the jail's user may read them as
                they are, copied for it otherwise: :meth:`firec.vm.layout.Layout.bring_in`).
            resume: resume the VM in the same request (otherwise it stays Paused).
            backend: ``"File"`` (Firecracker maps the memory file) or ``"Uffd"``
                (a page-fault handler serves it: firec's own
                :class:`~firec.snapshots.uffd.UffdHandler` unless ``uffd_handler`` names
                one, a handler object or its socket path as Firecracker sees it).
            network_overrides: ``iface_id`` -> tap to use instead (Firecracker 1.12+).
            vsock_override: a new vsock socket path (Firecracker 1.16+).
            track_dirty_pages: track dirty pages after the load (for diff snapshots).
            registry: where the new VM's id is claimed with a host record (as
                for :meth:`create`).

        Raises:
            SnapshotError: before spawning: the snapshot is from a Firecracker
                this one cannot load (both versions named), or its memory file
                is missing or truncated.
            ConfigError, UnsupportedError: before spawning: overrides naming
                unknown interfaces, options this Firecracker lacks.
            InUseError: before spawning: the new VM's id is taken.
            APIError: Firecracker refused the load (it then exits); nothing
                is left behind.
        """
        checked = plan_restore(  # quick: stats, and the binary's version once (cached)
            snapshot,
            config,
            resume=resume,
            backend=backend,
            uffd_handler=uffd_handler,
            network_overrides=network_overrides,
            vsock_override=vsock_override,
            track_dirty_pages=track_dirty_pages,
        )
        registration = cls._claim(checked.config, registry, f"snapshot:{snapshot.directory}")
        network = None
        try:
            if any(i.network is not None for i in checked.config.network_interfaces):
                checked, network = await io.run_blocking(attach_restore_network, checked)
            try:
                launch = plan(checked.config)
                client = AsyncClient(
                    launch.socket_path,
                    version=checked.version,
                    max_payload_size=checked.config.max_payload_size,
                )
                machine = cls(checked.config, launch=launch, client=client)
            except BaseException:
                if network is not None:
                    await io.run_blocking(network.teardown)
                raise
        except BaseException:
            if registration is not None:
                registration.release()
            raise
        machine._owned = True
        machine._network = network
        machine._registration = registration
        try:
            # links, or copies of what a jail's user could not read
            setup = await io.run_blocking(prepare_restore, launch, checked)
            machine._uffd = setup.handler
            await machine._spawn(ready_timeout, ask=False)
            await machine._load(setup.params, time.monotonic() + ready_timeout)
            watch = machine._exit_watch()
            if watch is not None:
                watch.observe()
        except BaseException:
            await machine.delete()
            raise
        machine._snapshot_base = snapshot
        machine._check_space()
        return machine

    @classmethod
    async def clone(
        cls,
        snapshot: Snapshot,
        n: int,
        config: Config | None = None,
        *,
        configure: Callable[[int, Config], Config] | None = None,
        network_overrides: PerClone | None = None,
        vsock_override: str | Callable[[int], str] | None = None,
        **restore: Any,
    ) -> list[Self]:
        """Start ``n`` independent VMs from ``snapshot``, concurrently.

        Each clone gets its own id (``<config's vm_id>-<i>``), socket, jail and
        VM directory; the memory file is shared, never copied. ``configure(i,
        config)`` may change each clone's config (another disk, log...);
        ``network_overrides`` maps interfaces to taps, e.g. ``{"eth0":
        "tap-clone{i}"}``; ``vsock_override`` is a socket path (with ``{i}``).
        Other keyword arguments go to :meth:`restore`. If one clone fails, the
        ones already started are stopped and deleted, and the first error is
        raised. Example::

            snap = machine.snapshot("/srv/snaps/base")
            clones = await AsyncMachine.clone(snap, 3)
        """
        plans = clone_plans(snapshot, n, config, configure, network_overrides, vsock_override)
        results = await io.gather(
            *(functools.partial(cls.restore, snapshot, c, **kw, **restore) for c, kw in plans)
        )
        started = [r for r in results if isinstance(r, cls)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            undone = await io.gather(*(machine.delete for machine in started))
            failures += [r for r in undone if isinstance(r, BaseException)]
            raise first_failure(failures, n)
        return started

    async def _load(self, params: models.SnapshotLoadParams, deadline: float) -> None:
        """``PUT /snapshot/load`` as soon as the socket accepts (it may refuse for a moment)."""
        started = time.monotonic()
        refusals = 0
        while True:
            try:
                await self.client.load_snapshot(params)
                return
            except ConnectError as exc:  # nothing was sent: safe to try again
                status = self.exit_status
                if status is not None:
                    what = "Firecracker exited before its API was ready"
                    raise self._failure(what, status) from exc
                if time.monotonic() > deadline:
                    raise
                refusals += 1
                if refusals <= QUICK_RETRIES:  # created, listening a moment later
                    await io.yield_cpu()
                else:
                    await io.pause(time.monotonic() - started)
            except APIError as exc:
                if "Unrecognized ioctl flags" in exc.fault_message:
                    raise SnapshotError(
                        f"Firecracker {await self.client.firecracker_version()} cannot restore "
                        "with the Uffd backend on this kernel: its userfaultfd library refuses "
                        "the kernel's newer UFFDIO ioctls (Firecracker said: "
                        f"{exc.fault_message}). Use the File backend, or a newer Firecracker "
                        "(1.14 works)"
                    ) from exc
                raise

    async def _spawn(self, ready_timeout: float, *, ask: bool = True) -> None:
        popen, console = spawn(self._launch)
        self._process = VmmProcess(popen.pid, popen)
        if self.config.jailer is None:  # Firecracker itself (jailed: found from the socket)
            self.client.vmm_pid = popen.pid
        if console is not None:
            wanted = self._launch.console
            if wanted.on_output is not None:
                self._console_reader = AsyncLineReader(
                    console.fileno(), wanted.on_output, follow=False, lines=False
                )
            else:
                assert wanted.on_line is not None
                self._console_reader = AsyncLineReader(
                    console.fileno(), wanted.on_line, follow=False
                )
            try:
                self._console_reader.start()
            finally:
                console.close()  # the reader has its own copy
            self._readers.append(self._console_reader)
        self._follow_outputs()
        deadline = time.monotonic() + ready_timeout
        jailer = self.config.jailer
        if jailer is not None and jailer.new_pid_ns:
            await self._adopt_from_pidfile(popen, deadline)
        if self._registration is not None:
            networked = self.config if self._network is not None else None
            self._registration.spawned(self._launch, self.pid, attached=networked)
        self._exit_watch()
        await self._wait_ready(deadline, ready_timeout, ask=ask)

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
            code = jailer.poll()
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
            accepts = socket_accepts(socket_path)  # None: not there yet
            if accepts:
                if not ask:
                    return
                try:
                    await self.client.get_instance_info(timeout=1.0)
                    return
                except TransportError:
                    pass
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

    # -- booting ---------------------------------------------------------------------

    async def start(self) -> None:
        """Configure the VM over the API in the order Firecracker needs, then InstanceStart.

        For a config-file boot the VM is already running; this only checks
        that it is. On failure the VMM is stopped (not deleted) and the error
        raised names the step: :class:`~firec.errors.APIError` carries
        Firecracker's message.
        """
        if self.config.boot_method is BootMethod.CONFIG_FILE:
            state = await self.state()
            if state is not MachineState.RUNNING and state is not MachineState.PAUSED:
                raise self._failure(f"the config-file boot left the VM {state}", None)
            return
        try:
            for method, argument in api_calls(self._launch):
                await getattr(self.client, method)(argument)
            await self.client.create_action(models.ActionType.INSTANCE_START)
            watch = self._exit_watch()
            if watch is not None:
                watch.observe()  # its vCPU threads, before a quick guest stops
        except (APIError, TransportError) as exc:
            status = await self._stop_after_failure()
            if isinstance(exc, APIError):
                raise
            raise self._failure(
                f"the VMM stopped answering while being configured: {exc}", status
            ) from exc
        except BaseException:
            await self._stop_after_failure()
            raise

    async def _stop_after_failure(self) -> ExitStatus | None:
        if self._process is None:
            return None
        return await self.force_shutdown()

    async def pause(self) -> None:
        """Pause the vCPUs (``PATCH /vm Paused``)."""
        await self.client.patch_vm(models.VmState.PAUSED)

    async def resume(self) -> None:
        """Resume the vCPUs (``PATCH /vm Resumed``)."""
        await self.client.patch_vm(models.VmState.RESUMED)

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

    async def state(self) -> MachineState:
        """The VM's state: asked from the API while the VMM runs, ``EXITED`` after.

        ``EXITED`` as soon as the VMM is exiting, too: once its guest has
        stopped (powered off, reset), its vCPU threads are gone, and the API
        is not asked. Firecracker (1.0 to 1.14) never answers a request that
        reaches it as it stops, and then never exits: a request under way
        when the VMM exits is given up, and a Firecracker hung that way is
        ended (:class:`~firec.vm.process.ExitWatch`; its exit status says so).
        Up to a second is spent waiting for an exiting VMM to be gone, so
        that :attr:`exit_status` is known when this returns ``EXITED``.
        At most once a second, it also warns (logger ``firec.vm``) when
        Firecracker's output files have no space left.
        """
        self._check_space(every=SPACE_LOOK)
        watch = self._exit_watch()
        if watch is not None and watch.stopping():
            await self._exits(EXIT_GRACE)
            return MachineState.EXITED
        try:
            info = await self.client.get_instance_info()
        except ConnectError:
            # refused, cut or given up: a VMM that is exiting (its API is gone first)
            if watch is None or await self._exits(EXIT_GRACE) or watch.stopping():
                return MachineState.EXITED
            raise
        return MachineState.from_instance(info.state)

    # -- snapshots -------------------------------------------------------------------

    async def snapshot(
        self, directory: str | os.PathLike[str], *, diff: bool = False, resume: bool = False
    ) -> Snapshot:
        """Take a snapshot into ``directory`` (new, or empty) and return it.

        The VM is paused first if it runs; afterwards it stays paused unless
        ``resume``. A diff snapshot (``diff=True``) holds the pages written
        since this VM's previous snapshot (or the snapshot it was restored
        from), which becomes its parent. In a jail Firecracker writes inside
        the jail and the files are then moved out to ``directory``. Example::

            snap = machine.snapshot("/srv/snaps/base", resume=True)
            later = machine.snapshot("/srv/snaps/step1", diff=True)
            later.flatten("/srv/snaps/step1-full")

        Raises:
            SnapshotError: ``directory`` already holds a snapshot, or a diff
                has no base to apply to.
            APIError: Firecracker refused (e.g. a diff on 1.0 without dirty
                page tracking). The VM is then resumed if it was running.
        """
        parent = self._snapshot_base if diff else None
        if diff and parent is None:
            raise SnapshotError(
                f"microVM {self.vm_id}: a diff snapshot needs a base: take a full "
                "snapshot first (or restore the VM from one)"
            )
        target = await io.run_blocking(SnapshotTarget.for_launch, self._launch, directory)
        was_running = False
        try:
            was_running = await self.state() is MachineState.RUNNING
            if was_running:
                await self.pause()
            await self.client.create_snapshot(target.params(diff))
            exported = await self.client.get_vm_config()
            version = await self.client.firecracker_version()
            taken = await io.run_blocking(
                target.finish,
                diff=diff,
                version=version,
                vm_config=exported.to_api(),
                parent=parent,
                previous=self._snapshot_base,
            )
        except BaseException:
            await io.run_blocking(target.discard)
            if was_running and self.exit_status is None:
                await self.resume()
            raise
        if resume:
            await self.resume()
        self._snapshot_base = taken
        return taken

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
        """Firecracker's last lines: the last ``n`` of its log, its stderr and the console."""
        lines: list[str] = self._log.recent(n) if self._launch.log_is_fifo and self._log else []
        for path in (self._launch.log_path, self._launch.stderr_path, self._launch.console_path):
            if path is not None and path.is_file():
                lines += tail_lines(path, n)
        return lines

    @property
    def metrics(self) -> MetricsSnapshot | None:
        """The latest metrics Firecracker wrote, when a metrics path or fifo is set."""
        return self._metrics.latest if self._metrics is not None else None

    async def flush_metrics(self, timeout: float = 5.0) -> MetricsSnapshot:
        """Ask Firecracker to write its metrics now (FlushMetrics) and return them."""
        if self._metrics is None:
            raise MachineError(
                f"microVM {self.vm_id} has no metrics path: set metrics_path or metrics_fifo"
            )
        seen = self._metrics.snapshots_seen
        await self.client.create_action(models.ActionType.FLUSH_METRICS)
        deadline = time.monotonic() + timeout
        while self._metrics.snapshots_seen == seen:
            if time.monotonic() > deadline:
                raise MachineError(f"microVM {self.vm_id}: no metrics arrived within {timeout:g}s")
            await io.sleep(0.005)
        latest = self._metrics.latest
        assert latest is not None
        return latest

    # -- devices ---------------------------------------------------------------------
    #
    # Everything else a device can do after boot is one client call away, e.g.
    # machine.client.patch_balloon(models.BalloonUpdate(amount_mib=64)),
    # machine.client.patch_network_interface(models.PartialNetworkInterface(...)),
    # machine.client.put_mmds({...}) / patch_mmds / get_mmds,
    # machine.client.patch_memory_hotplug(models.MemoryHotplugSizeUpdate(...)).

    @property
    def vsock_path(self) -> Path | None:
        """The vsock device's Unix socket on the host (inside the jail when jailed), if any."""
        return self._launch.vsock_path

    def _require_vsock(self) -> Path:
        path = self._launch.vsock_path
        if path is None:
            raise MachineError(
                f"microVM {self.vm_id} has no vsock device: give the config one "
                "(Config.vsock, or Builder.vsock(guest_cid, uds_path))"
            )
        return path

    async def vsock_connect(
        self, port: int, *, timeout: float | None = vsock.DEFAULT_TIMEOUT
    ) -> io.VsockConnection:
        """Connect to vsock ``port`` in the guest (Firecracker's ``CONNECT``/``OK`` handshake).

        Returns what :func:`firec.vm.vsock.connect` returns (a socket); the async
        machine returns a ``(reader, writer)`` pair as
        :func:`firec.vm.vsock.open_connection` does. Raises
        :class:`~firec.errors.ConnectError` / :class:`~firec.errors.TimeoutError`
        saying ``nothing listens on vsock port N in the guest`` when the guest
        does not accept the connection within ``timeout`` seconds.
        """
        return await io.vsock_connect(self._require_vsock(), port, timeout)

    async def vsock_listen(self, port: int) -> io.VsockListener:
        """Listen for guest connections to host vsock ``port`` (CID 2).

        The socket is made at ``<uds_path>_<port>`` on the host side of the
        jail, owned by the jail's user. Take connections with
        ``accept_within(timeout)``; :meth:`delete` closes the listener and
        removes its socket file if it is still open.
        """
        owner = self._launch.layout.owner
        listener = await io.vsock_listen(self._require_vsock(), port, owner)
        self._vsock_listeners.append(listener)
        return listener

    async def update_drive(
        self,
        drive_id: str,
        *,
        path: str | os.PathLike[str] | None = None,
        rate_limiter: models.RateLimiter | None = None,
    ) -> None:
        """Swap a running VM's drive to another backing file, or change its rate limiter.

        ``path`` is a host path; a jailed VM gets the file brought into its
        jail first, by :meth:`~firec.vm.layout.Layout.bring_in` (which never changes
        the file: a writable drive the jail's user may not write as it is is
        refused with a :class:`~firec.errors.ConfigError`). A ``rate_limiter``
        replaces the buckets it gives and keeps the others; a bucket of size 0 turns that limit off.
        ``PATCH /drives/{drive_id}``: Firecracker's refusal (unknown drive, not
        booted yet) is an :class:`~firec.errors.APIError`.
        """
        seen: str | None = None
        if path is not None:
            if not Path(path).is_file() and not Path(path).is_block_device():
                raise ConfigError(f"drives.{drive_id}.path_on_host", f"{path} is not a file")
            known = {d.drive_id: d for d in self.config.drives}
            writable = drive_id not in known or not known[drive_id].is_read_only
            seen = await io.run_blocking(
                self._launch.layout.bring_in,
                path,
                writable=writable,
                field=f"drives.{drive_id}.path_on_host",
            )
        await self.client.patch_drive(
            models.PartialDrive(drive_id=drive_id, path_on_host=seen, rate_limiter=rate_limiter)
        )

    # -- stopping --------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait until the VMM exits and return how it ended.

        A VMM whose guest has stopped but that hangs in Firecracker's shutdown
        (a request reached it as it stopped: see :meth:`state`) is ended, and
        its exit status says so. Raises :class:`~firec.errors.TimeoutError`
        if ``timeout`` passes first.
        """
        process = self._require_process()
        watch = self._exit_watch()
        assert watch is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = WAIT_LOOK if left is None else min(left, WAIT_LOOK)
            if await io.wait_pid(process.pid, step, process.popen):
                break
            watch.check()  # a VMM hung as it stops is ended: it could never exit
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"microVM {self.vm_id} (pid {process.pid}) still runs after {timeout:g}s",
                    socket_path=str(self.socket_path),
                )
        if self._console_reader is not None:
            await io.drain(self._console_reader, 1.0)
        self._check_space()
        status = process.exit_status
        assert status is not None
        return status

    async def shutdown(
        self, *, timeout: float = SHUTDOWN_TIMEOUT, term_timeout: float = TERM_TIMEOUT
    ) -> ExitStatus:
        """Stop the VM, escalating: SendCtrlAltDel, then SIGTERM, then SIGKILL.

        The guest gets ``timeout`` seconds to stop after SendCtrlAltDel (sent
        only where Firecracker supports it, x86_64, while the VM runs);
        Firecracker gets ``term_timeout`` after SIGTERM. Returns the exit status.
        """
        process = self._require_process()
        if process.running and os.uname().machine == "x86_64":
            try:
                if await self.state() is MachineState.RUNNING:
                    await self.client.create_action(
                        models.ActionType.SEND_CTRL_ALT_DEL, timeout=1.0
                    )
                    if await io.wait_pid(process.pid, timeout, process.popen):
                        return await self.wait()
            except (APIError, TransportError):
                pass  # not booted, or already going: escalate
        if process.signal(signal.SIGTERM) and await io.wait_pid(
            process.pid, term_timeout, process.popen
        ):
            return await self.wait()
        return await self.force_shutdown()

    async def force_shutdown(self) -> ExitStatus:
        """Kill the VMM at once (SIGKILL) and return its exit status."""
        process = self._require_process()
        process.signal(signal.SIGKILL)
        return await self.wait(timeout=10.0)

    def _require_process(self) -> VmmProcess:
        if self._process is None:
            raise MachineError(f"microVM {self.vm_id}: its VMM process is not known")
        return self._process

    def forward_signals(self, *signals: int) -> None:
        """Forward these signals (default: SIGINT, SIGTERM, SIGHUP) to the VMM.

        Handlers are restored by :meth:`delete`. Only from the main thread.
        """
        for sig in signals or (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._forwarded[sig] = signal.signal(sig, self._forward)

    def _forward(self, sig: int, frame: object) -> None:
        if self._process is not None:
            self._process.signal(sig)

    async def delete(self) -> None:
        """Stop the VMM if it runs and remove everything firec made for it.

        The socket, fifos, console and error files, the config file, the jail
        (chroot tree) and the cgroups the jailer made. Safe to call twice.
        Raises :class:`~firec.errors.MachineError` naming what could not be removed.
        """
        if self._deleted:
            return
        self._deleted = True
        for sig, handler in self._forwarded.items():
            signal.signal(sig, handler)
        self._forwarded.clear()
        try:
            if self._process is not None and self._process.running:
                await self.force_shutdown()
        finally:
            for reader in self._readers:
                await reader.stop()
            for listener in self._vsock_listeners:
                listener.close()
            if self._uffd is not None:
                await io.run_blocking(self._uffd.close)
            await self.client.aclose()
            left = cleanup(self._launch) if self._owned else self._remove_stale_socket()
            if self._network is not None:
                await io.run_blocking(self._network.teardown)
        if left:
            # the host record stays, naming what is left, for firec gc
            raise MachineError(f"microVM {self.vm_id}: could not remove " + "; ".join(left))
        if self._registration is not None:
            self._registration.release()

    def _remove_stale_socket(self) -> list[str]:
        """For a connected VM: remove its socket once the VMM is gone (it never does)."""
        if self.exit_status is None:
            return []
        try:
            self.socket_path.unlink(missing_ok=True)
        except OSError as exc:
            return [f"{self.socket_path}: {exc.strerror}"]
        return []

    async def detach(self) -> None:
        """Let the VM outlive this program: ``firec ls`` shows it as detached.

        Without it, a VM whose program dies is reaped by ``firec gc`` (its
        VMM killed, everything it had removed). A detached VM runs on until
        ``firec stop``/``firec rm`` (or :meth:`delete`). Example::

            machine = await AsyncMachine.create(config)
            await machine.start()
            await machine.detach()   # the program may exit now; the VM runs on

        Raises:
            MachineError: the VM has no host record (``Config.host_record`` is off).
        """
        if self._registration is None:
            raise MachineError(
                f"microVM {self.vm_id} has no host record to detach it in: "
                "it was made with Config.host_record=False, or connected to"
            )
        version = await self.client.firecracker_version()
        self._registration.detach(str(version))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.delete()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.vm_id} pid={self.pid}>"
