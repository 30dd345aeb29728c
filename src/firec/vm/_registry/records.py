"""What firec records of one microVM: :class:`VmRecord`, :class:`Phase`, :class:`NetworkInfo`.

One JSON file per VM (``vms/<id>.json`` in :func:`~firec.host.registry.state_dir`),
stamped ``"format": "firec-vm/1"`` (:data:`RECORD_FORMAT`) and written whole
(:mod:`firec._jsonfile`); :class:`~firec.host.registry.Registry` keeps them.
A record names the VMM process, the process that started the VM, everything
made for it, and its whole :class:`~firec.vm.config.Config`
(:meth:`~firec.vm.config.Config.to_dict`); the liveness checks
(:meth:`VmRecord.stale`, :meth:`VmRecord.abandoned`...) tell ``firec gc`` what
to reap.

Example::

    >>> import os
    >>> from pathlib import Path
    >>> from firec.vm.config import Config
    >>> record = VmRecord.new(Config(vm_id="vm-1", kernel_image=Path("/k")), detached=False)
    >>> record.phase, record.controller.pid == os.getpid(), record.stale()
    (<Phase.STARTING: 'starting'>, True, False)
    >>> VmRecord.from_dict(record.to_dict()) == record
    True
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firec import _jsonfile
from firec.errors import FirecError
from firec.vm import _codec
from firec.vm._launch import Launch
from firec.vm.config import Config
from firec.vm.console import Console
from firec.vm.layout import layout_from_record
from firec.vm.process import ProcessRef

__all__ = ["RECORD_FORMAT", "VM_RECORD", "NetworkInfo", "Phase", "VmRecord"]

#: The format of VM records (:mod:`firec._jsonfile`).
VM_RECORD = _jsonfile.Format("firec-vm", 1)
#: What a VM record's ``format`` key holds.
RECORD_FORMAT = str(VM_RECORD)


class Phase(enum.StrEnum):
    """How far a VM's start got.

    * ``STARTING``: the record exists; the network, the VMM and the boot may
      be under way (or were, when the controller died).
    * ``STARTED``: the VMM booted the VM (or a snapshot was loaded into it).
    """

    STARTING = "starting"
    STARTED = "started"


@dataclass(frozen=True)
class NetworkInfo:
    """What a VM's network set-up made (for people, and for the teardown).

    Attributes:
        state_dir: the ``state_dir`` of :func:`firec.network.setup_network`;
            :func:`firec.network.teardown_network` with it removes everything.
        netns: the VM's network namespace, if it has one.
        interfaces: per interface: ``iface_id``, ``tap``, ``guest_mac`` and,
            when firec leased one, ``address`` (CIDR) and ``gateway``.
        nft: the nft table and chain of the VM's rules, if it has any.
    """

    state_dir: str
    netns: str | None = None
    interfaces: tuple[Mapping[str, Any], ...] = ()
    nft: Mapping[str, str] | None = None

    @classmethod
    def of(cls, config: Config, state_dir: Path) -> NetworkInfo:
        """What the network set-up of ``config`` (as attached) made, with its leases."""
        from firec.network import LeaseStore, RoutedNetwork
        from firec.network.nat import FAMILY, TABLE
        from firec.network.setup import vm_key

        interfaces = []
        routed = False
        for nic in config.network_interfaces:
            entry: dict[str, Any] = {
                "iface_id": nic.iface_id,
                "tap": nic.host_dev_name,
                "guest_mac": nic.guest_mac,
            }
            plan = nic.network
            if isinstance(plan, RoutedNetwork):
                routed = True
                store = LeaseStore(state_dir, plan.network, gateway=plan.gateway_address)
                lease = store.get(f"{config.vm_id}/{nic.iface_id}")
                if lease is not None:
                    entry["address"] = str(lease.interface)
                    entry["gateway"] = str(lease.gateway)
            interfaces.append(entry)
        key = vm_key(config.vm_id)
        nft = {"table": f"{FAMILY} {TABLE}", "chain": f"vm_{key}"} if routed else None
        return cls(
            state_dir=str(state_dir), netns=config.net_ns, interfaces=tuple(interfaces), nft=nft
        )


@dataclass(frozen=True)
class VmRecord:
    """Everything firec knows about one microVM on this host (one JSON file).

    Attributes:
        vm_id: the microVM id.
        phase: :class:`Phase`.
        created: when the record was made (UTC, ISO 8601).
        detached: whether the VM is meant to outlive its controller.
        controller: the process that started (and, unless detached, owns) it.
        vmm: the VMM process (Firecracker, or the jailer that execs it).
        socket: the API socket on the host.
        vm_dir: firec's directory for the VM (console, stderr, plain runs' socket).
        jail: the jail's directory (``<chroot base>/<exec name>/<id>``), when jailed.
        jail_owner: the jail's uid and gid.
        cgroups: cgroup directories the jailer made.
        files: files outside ``vm_dir`` and the jail that firec or the VMM made.
        console: the console file, when the console goes to a file.
        log: Firecracker's log on the host.
        log_is_fifo: whether ``log`` is a fifo.
        metrics: Firecracker's metrics file (or fifo) on the host.
        metrics_is_fifo: whether ``metrics`` is a fifo.
        stderr: where Firecracker's standard error goes.
        network: what the network set-up made, if the VM has a network.
        config: the VM's config (:meth:`~firec.vm.config.Config.to_dict`).
        firecracker_version: the VMM's version, once known.
        origin: where the VM came from: ``None`` (booted), or ``"snapshot:<dir>"``.
    """

    vm_id: str
    phase: Phase
    created: str
    detached: bool
    config: Mapping[str, Any]
    controller: ProcessRef | None = None
    vmm: ProcessRef | None = None
    socket: str | None = None
    vm_dir: str | None = None
    jail: str | None = None
    jail_owner: tuple[int, int] | None = None
    cgroups: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    console: str | None = None
    log: str | None = None
    log_is_fifo: bool = False
    metrics: str | None = None
    metrics_is_fifo: bool = False
    stderr: str | None = None
    network: NetworkInfo | None = None
    firecracker_version: str | None = None
    origin: str | None = None
    format: str = field(default=RECORD_FORMAT)

    @classmethod
    def new(
        cls,
        config: Config,
        *,
        detached: bool,
        origin: str | None = None,
        launch: Launch | None = None,
    ) -> VmRecord:
        """The first record of a VM about to be started by this process.

        With ``launch``, it names where everything goes, as :meth:`with_launch`
        (made in one step: a :meth:`replace` of all the fields costs as much).
        """
        return cls(
            vm_id=config.vm_id,
            phase=Phase.STARTING,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            detached=detached,
            config=config.to_dict(),
            controller=_this_process(os.getpid()),
            origin=origin,
            **(_launch_fields(launch, None) if launch is not None else {}),
        )

    def replace(self, **changes: Any) -> VmRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def with_launch(self, launch: Launch, vmm_pid: int | None) -> VmRecord:
        """This record with where ``launch`` put everything, and the VMM's pid."""
        return self.replace(**_launch_fields(launch, vmm_pid))

    @property
    def vm_config(self) -> Config:
        """The VM's :class:`~firec.vm.config.Config`."""
        return Config.from_dict(self.config)

    def launch(self) -> Launch:
        """The :class:`~firec.vm._launch.Launch` facts of the VM, as recorded.

        Built from the record alone (not re-planned), so it names what was
        really made even if binaries, environment variables or defaults have
        changed since; a config that cannot be read any more does not keep
        the VM's files from being found.
        """
        try:
            config = self.vm_config
        except FirecError:
            config = Config(vm_id=self.vm_id, kernel_image=Path("/"))
        vm_dir = Path(self.vm_dir) if self.vm_dir else config.vm_dir
        console = Console.file(self.console) if self.console else Console.discard()
        return Launch(
            config=config,
            layout=layout_from_record(vm_dir, self.jail, self.jail_owner),
            vm_dir=vm_dir,
            socket_path=Path(self.socket) if self.socket else vm_dir / "firecracker.socket",
            log_path=Path(self.log) if self.log else vm_dir / "firecracker.log",
            log_is_fifo=self.log_is_fifo,
            metrics_path=Path(self.metrics) if self.metrics else None,
            metrics_is_fifo=self.metrics_is_fifo,
            console=console,
            console_path=Path(self.console) if self.console else None,
            stderr_path=Path(self.stderr) if self.stderr else vm_dir / "firecracker.stderr",
            config_file_path=None,
            metadata_path=None,
            cgroups=tuple(Path(c) for c in self.cgroups),
        )

    # -- liveness ------------------------------------------------------------------------

    def vmm_alive(self) -> bool:
        """Whether the recorded VMM process still runs (a reused pid does not count)."""
        return self.vmm is not None and self.vmm.alive()

    def controller_alive(self) -> bool:
        """Whether the process that started the VM still runs."""
        return self.controller is not None and self.controller.alive()

    def abandoned(self) -> bool:
        """Whether its controller died while it needed one.

        A VM still starting needs its controller; so does a foreground one
        (not detached) all its life.
        """
        needs_controller = not self.detached or self.phase is Phase.STARTING
        return needs_controller and not self.controller_alive()

    def stale(self) -> bool:
        """Whether nothing of it runs any more: neither its VMM nor the process that made it.

        A VM whose VMM exited but whose controller still runs is not stale:
        that process still owns its files (an SDK program reading the
        console after the guest powered off, a ``firec run`` cleaning up).
        """
        return not self.vmm_alive() and not self.controller_alive()

    def holder(self) -> str | None:
        """Who holds the VM's id now, for people; ``None`` when nothing of it runs."""
        if self.vmm is not None and self.vmm.alive():
            return f"its VMM runs (pid {self.vmm.pid}, recorded in the registry)"
        if self.controller is not None and self.controller.alive():
            return f"process {self.controller.pid} ({_command(self.controller.pid)}) owns it"
        return None

    # -- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (made once per record: change a copy of it, not it)."""
        data: dict[str, Any] | None = self.__dict__.get("_json")
        if data is None:
            data = _codec.encode(self)
            self.__dict__["_json"] = data  # not a field: a frozen record may keep it
        return data

    def with_vmm(self, vmm: ProcessRef | None) -> VmRecord:
        """This record with ``vmm``; its JSON is this one's with that one field changed.

        What the pid update after the spawn writes: :meth:`replace` would check
        and set all the fields again, and :meth:`to_dict` encode them all again.
        """
        data = {**self.to_dict(), "vmm": _codec.encode(vmm)}
        record = object.__new__(type(self))  # a copy of the fields as they are
        record.__dict__.update(self.__dict__, vmm=vmm, _json=data)
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VmRecord:
        """Read a record; :class:`~firec.errors.FirecError` when it is not one."""
        if not isinstance(data, Mapping) or data.get("format") != RECORD_FORMAT:
            raise FirecError(f"not a {RECORD_FORMAT} record")
        try:
            record: VmRecord = _codec.decode(cls, data)
        except _codec.DecodeError as exc:
            raise FirecError(f"not a {RECORD_FORMAT} record: {exc}") from exc
        return record


def _launch_fields(launch: Launch, vmm_pid: int | None) -> dict[str, Any]:
    """The fields of a record that say where ``launch`` put everything, and the VMM."""
    return dict(
        vmm=ProcessRef.of(vmm_pid) if vmm_pid is not None else None,
        socket=str(launch.socket_path),
        vm_dir=str(launch.vm_dir),
        **launch.layout.record(),  # jail, jail_owner
        cgroups=tuple(str(c) for c in launch.cgroups),
        files=tuple(str(p) for p in launch.firec_files()),
        console=str(launch.console_path) if launch.console_path is not None else None,
        log=str(launch.log_path),
        log_is_fifo=launch.log_is_fifo,
        metrics=str(launch.metrics_path) if launch.metrics_path is not None else None,
        metrics_is_fifo=launch.metrics_is_fifo,
        stderr=str(launch.stderr_path),
    )


@functools.cache
def _this_process(pid: int) -> ProcessRef | None:
    """This process, as records name their controller (read once; by pid: a fork is another)."""
    return ProcessRef.of(pid)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
