"""A microVM's life: create or connect, boot, pause, ask its state, stop, delete.

The layer of :class:`firec.AsyncMachine` (see :mod:`firec.vm._async.machine`)
that makes a machine and ends it, on the VMM process of
:mod:`firec.vm._async.vmm`: the id claimed with a host record, the network set
up, the VMM spawned and configured, and at the end stopped with escalation and
everything firec made removed. :mod:`firec.vm._async.snapshots` builds on it.
"""

# This file is the one source of both flavours: lifecycle.py (under the synchronous
# firec.Machine) is generated from it. Edit here, then run scripts/unasync.py.

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from firec.api import models
from firec.api._async.client import AsyncClient
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, payload_limit_in_args
from firec.errors import (
    APIError,
    ConnectError,
    FirecError,
    MachineError,
    TimeoutError,
    TransportError,
)
from firec.vm._async import io
from firec.vm._async.vmm import (
    EXIT_GRACE,
    READY_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    SPACE_LOOK,
    TERM_TIMEOUT,
    WAIT_LOOK,
    MachineVmm,
)
from firec.vm._launch import (
    Launch,
    api_calls,
    attach_network,
    attached,
    cleanup,
    find_socket,
    plan,
    prepare,
)
from firec.vm._registry.claim import Registration, Registry
from firec.vm._registry.records import VmRecord
from firec.vm.config import BootMethod, Config
from firec.vm.process import ExitStatus, VmmProcess, find_vmm_pid, process_args
from firec.vm.state import MachineState

if TYPE_CHECKING:
    from firec.network import VMNetwork

__all__ = ["MachineLifecycle"]

#: What a new machine is made from: a config, or a checked restore.
P = TypeVar("P")


class MachineLifecycle(MachineVmm):
    """A microVM from its making to its end: the lifecycle of :class:`firec.AsyncMachine`."""

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
        launch = plan(config)  # where everything goes: the record names it, the VMM uses it
        registration = cls._claim(config, registry, launch=launch)
        networked = any(i.network is not None for i in config.network_interfaces)
        attach = attach_network if networked else None
        machine, _ = await cls._own(
            registration,
            config,
            attach,
            # the claim's launch, unless the network set-up changed the config (taps, netns)
            lambda planned: cls(planned, launch=launch if planned is config else None),
        )
        try:
            prepare(machine._launch)  # links, fifos, small files: no thread needed
            await machine._spawn(ready_timeout)
        except BaseException:
            await machine.delete()
            raise
        return machine

    @staticmethod
    def _claim(
        config: Config,
        registry: Registry | Registration | None,
        origin: str | None = None,
        *,
        launch: Launch | None = None,
    ) -> Registration | None:
        """Claim ``config``'s id with a host record (unless ``host_record`` is off)."""
        if isinstance(registry, Registration):
            return registry  # claimed by the caller
        if not config.host_record:
            return None
        # a few small files under a lock held for a moment: no thread needed
        launch = launch or plan(config)
        return Registration.claim(registry or Registry(), config, launch, origin=origin)

    @classmethod
    async def _own(
        cls,
        registration: Registration | None,
        planned: P,
        attach: Callable[[P], tuple[P, VMNetwork | None]] | None,
        make: Callable[[P], Self],
    ) -> tuple[Self, P]:
        """``make(planned)``: a new machine that owns its files, its network and its host record.

        ``attach`` (given where an interface has a network plan) sets the
        network up first, and returns ``planned`` as the VMM must see it. The
        machine's :meth:`delete` tears the network down and releases
        ``registration``; a failure before the machine is made does both here.
        """
        network: VMNetwork | None = None
        try:
            if attach is not None:
                planned, network = await io.run_blocking(attach, planned)
            try:
                machine = make(planned)
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
        return machine, planned

    @classmethod
    async def connect(
        cls,
        target: str | os.PathLike[str],
        *,
        pid: int | None = None,
        timeout: float = READY_TIMEOUT,
        registry: Registry | None = None,
    ) -> Self:
        """Attach to a VMM that is already running, by its API socket or its vm id.

        An id that firec recorded on this host (the host record ``create``
        writes, in ``registry``, by default
        :class:`~firec.host.registry.Registry`'s own directory) gives a machine
        that knows the VM's config, files and jail as its maker did: its guest
        agent (:meth:`exec`, :attr:`files`), snapshots and devices work as on
        the machine that created it. Otherwise the id is looked up where firec
        puts sockets (``<runtime dir>/<id>/`` for plain VMs,
        ``/srv/jailer/*/<id>/root/run/`` for jailed ones) and the machine
        knows only the API: ``pid`` is found from the process table when not
        given. Either way :meth:`delete` stops the VMM but removes only its
        socket: whoever made the VM (or ``firec rm`` / ``firec gc``) removes
        the rest.

        Example::

            machine = await AsyncMachine.connect("web-1")  # from `firec run -d`
            print((await machine.exec(["uname", "-r"])).stdout)
        """
        record = _running_record(target, registry)
        if record is not None:
            launch = record.launch()
            config = launch.config
            client = AsyncClient(
                launch.socket_path, timeout=timeout, max_payload_size=config.max_payload_size
            )
            pid = record.vmm.pid if record.vmm is not None else None
        else:
            socket_path = find_socket(target)
            client = AsyncClient(socket_path, timeout=timeout)
        try:
            info = await client.get_instance_info()  # refuses a Firecracker before 1.0
        except FirecError:
            await client.aclose()
            raise
        if record is None:
            config = Config(vm_id=info.id, kernel_image=Path("/"), socket_path=socket_path)
            launch = attached(config)
            pid = pid or find_vmm_pid(os.fspath(socket_path))
            if pid is not None:  # its --http-api-max-payload-size, when it was given one
                limit = payload_limit_in_args(process_args(pid))
                client.max_payload_size = limit if limit is not None else DEFAULT_MAX_PAYLOAD_SIZE
        client.vmm_pid = pid
        process = VmmProcess(pid) if pid is not None else None
        return cls(config, launch=launch, client=client, process=process)

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


def _running_record(target: str | os.PathLike[str], registry: Registry | None) -> VmRecord | None:
    """The host record of ``target`` when it is the id of a recorded VM whose VMM runs."""
    name = os.fspath(target)
    if os.sep in name or not name or name.startswith("."):
        return None  # a path
    try:
        record = (registry or Registry()).load(name)
    except FirecError:  # not an id firec would take, or an unreadable record
        return None
    if record is None or record.socket is None or record.vmm is None or not record.vmm.alive():
        return None
    return record
