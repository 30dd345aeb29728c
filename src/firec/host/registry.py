"""Host state: the microVMs firec started on this host, and everything each one holds.

``firec run -d`` starts a microVM and exits; ``firec ls``, ``stop``, ``rm`` and
``gc``, run later from any process of the same user, find it again here. SDK
programs record their VMs too (:class:`Registration`, used by
:meth:`firec.Machine.create` and :meth:`~firec.Machine.restore` unless
``Config.host_record`` is off). Each VM has one JSON record, written before
anything is made for it (the record claims the id: :meth:`Registry.claim`)
and updated as things are made, so that a controller that crashes half-way
leaves enough behind for :func:`reap` to remove it all:

* the VMM process (pid, with its start time and the boot id, so that a reused
  pid is never mistaken for the VMM);
* the controller: the process that started the VM (a foreground ``firec run``
  owns its VM; a detached VM has no owner once ``firec run -d`` exited);
* the API socket, firec's VM directory, the jail and its cgroups, fifos;
* console, log and metrics files;
* the network (taps, namespace, nft chain, leases: see :mod:`firec.network`);
* the whole :class:`~firec.vm.config.Config`, so the VM can be inspected and
  cleaned up without the command line that made it.

Where the state lives (:func:`state_dir`): ``$FIREC_STATE_DIR`` if set, else
``/run/firec/state`` for root, else ``$XDG_STATE_HOME/firec`` or
``~/.local/state/firec``. Inside it, ``vms/<id>.json`` and its lock
``vms/<id>.lock`` (:mod:`filelock`), and ``networks/`` (network records and
leases, the ``state_dir`` given to :func:`firec.network.setup_network`).

Example::

    from firec.host.registry import Registry, reap

    registry = Registry()
    for record in registry.records():
        print(record.vm_id, record.vmm_alive(), record.abandoned())
        if record.stale():
            reap(registry, record)  # the VMM is gone: remove what it left
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import ipaddress
import itertools
import os
import signal
import socket
import struct
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import filelock

from firec import _jsonfile
from firec.api import models
from firec.api.models.base import APIModel
from firec.errors import FirecError, InUseError, MachineError, NetworkError, StateError
from firec.vm._launch import Launch, cleanup, socket_accepts
from firec.vm.config import Config
from firec.vm.config import state_dir as default_network_state_dir
from firec.vm.console import Console, ConsoleKind
from firec.vm.jailer import JailerConfig, validate_id
from firec.vm.layout import layout_from_record
from firec.vm.process import ProcessRef, boot_id, wait_until

__all__ = [
    "RECORD_FORMAT",
    "NetworkInfo",
    "Phase",
    "ProcessRef",
    "Registration",
    "Registry",
    "VmRecord",
    "boot_id",
    "config_from_dict",
    "config_to_dict",
    "find_unrecorded_vmm",
    "kill_vmm",
    "network_state_dir",
    "reap",
    "state_dir",
]

RECORD_FORMAT = "firec-vm/1"
#: Seconds to wait for another process's lock on a VM before giving up.
LOCK_TIMEOUT = 30.0
#: Seconds to wait for a killed VMM to be reaped, and its cgroups to be free.
REAP_TIMEOUT = 3.0


def state_dir() -> Path:
    """firec's host state directory (see the module documentation)."""
    explicit = os.environ.get("FIREC_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/run/firec/state")
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "firec"


# -- processes ------------------------------------------------------------------------------


# -- config <-> JSON --------------------------------------------------------------------------


_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, (Path, *_IP_TYPES)):
        return str(value)
    if isinstance(value, APIModel):
        return value.to_api()
    if isinstance(value, Console):
        return {"kind": value.kind.value, "path": None if value.path is None else str(value.path)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__} in a VM record")


def _hints(cls: type) -> dict[str, Any]:
    # names some modules import only for type checking
    names: dict[str, Any] = {**vars(models), "Console": Console, "JailerConfig": JailerConfig}
    return typing.get_type_hints(cls, localns=names)


def _decode_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    options = [a for a in args if a is not type(None)]
    if value is None:
        return None
    if str in options and isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        # several dataclasses: the one whose fields are the keys
        for option in options:
            if (
                dataclasses.is_dataclass(option)
                and isinstance(option, type)
                and set(value) == {f.name for f in dataclasses.fields(option)}
            ):
                return _decode(option, value, where)
    errors = []
    for option in options:
        try:
            return _decode(option, value, where)
        except (ValueError, TypeError, KeyError, FirecError) as exc:
            errors.append(str(exc))
    raise ValueError(f"{where}: {value!r} is none of {options}: {'; '.join(errors)}")


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _decode_union(args, value, where)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: {value!r} is not a list")
        return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: {value!r} is not an object")
        return dict(value)
    if hint is Path:
        return Path(value)
    if hint is Console:
        kind = ConsoleKind(value["kind"])
        if kind is ConsoleKind.FILE:
            return Console.file(value["path"])
        if kind is ConsoleKind.TERMINAL:
            return Console.terminal()
        return Console.discard()  # a callback does not survive its process
    if isinstance(hint, type) and issubclass(hint, APIModel):
        return hint.from_api(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and issubclass(hint, _IP_TYPES):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if hint in (str, int, bool, float):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ValueError(f"{where}: {value!r} is not a {hint.__name__}")
        return value
    raise ValueError(f"{where}: cannot read a {hint}")


def _decode_dataclass(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: {data!r} is not an object")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    kwargs = {name: _decode(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    init = {k: v for k, v in kwargs.items() if fields[k].init}
    return cls(**init)


def config_to_dict(config: Config) -> dict[str, Any]:
    """A JSON-ready dict of ``config`` (defaults left out); :func:`config_from_dict` reverses it.

    A console that goes to a callback is recorded as such, and read back as
    :meth:`~firec.vm.console.Console.discard` (a function does not outlive its process).

    >>> config = Config(vm_id="vm-1", kernel_image=Path("/k"), kernel_args="console=ttyS0")
    >>> config_to_dict(config)
    {'vm_id': 'vm-1', 'kernel_image': '/k', 'kernel_args': 'console=ttyS0'}
    >>> config_from_dict(config_to_dict(config)) == config
    True
    """
    out: dict[str, Any] = {}
    default = Config(vm_id=config.vm_id, kernel_image=config.kernel_image)
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        if f.name in ("vm_id", "kernel_image") or value != getattr(default, f.name):
            out[f.name] = _encode(value)
    return out


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """The :class:`~firec.vm.config.Config` recorded by :func:`config_to_dict`.

    Raises:
        FirecError: the data is not a recorded config.
    """
    try:
        config: Config = _decode_dataclass(Config, data, "config")
    except (ValueError, TypeError, KeyError, FirecError) as exc:
        raise FirecError(f"not a recorded firec config: {exc}") from exc
    return config


# -- records ----------------------------------------------------------------------------------


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
        config: the VM's config (:func:`config_to_dict`).
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
    def new(cls, config: Config, *, detached: bool, origin: str | None = None) -> VmRecord:
        """The first record of a VM about to be started by this process."""
        return cls(
            vm_id=config.vm_id,
            phase=Phase.STARTING,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            detached=detached,
            config=config_to_dict(config),
            controller=ProcessRef.of(os.getpid()),
            origin=origin,
        )

    def replace(self, **changes: Any) -> VmRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def with_launch(self, launch: Launch, vmm_pid: int | None) -> VmRecord:
        """This record with where ``launch`` put everything, and the VMM's pid."""
        return self.replace(
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

    @property
    def vm_config(self) -> Config:
        """The VM's :class:`~firec.vm.config.Config`."""
        return config_from_dict(self.config)

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
        """The record as JSON-ready data."""
        data: dict[str, Any] = _encode(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VmRecord:
        """Read a record; :class:`~firec.errors.FirecError` when it is not one."""
        if not isinstance(data, Mapping) or data.get("format") != RECORD_FORMAT:
            raise FirecError(f"not a {RECORD_FORMAT} record")
        try:
            record: VmRecord = _decode_dataclass(cls, data, "record")
        except (ValueError, TypeError, KeyError) as exc:
            raise FirecError(f"not a {RECORD_FORMAT} record: {exc}") from exc
        return record


# -- the registry -----------------------------------------------------------------------------


class Registry:
    """The VM records of one state directory.

    Reads need no lock (records are replaced atomically); changes to one VM
    are made under its lock, :meth:`lock`, which every firec process honours.

    Args:
        root: the state directory (default: :func:`state_dir`).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else state_dir()

    @property
    def vms_dir(self) -> Path:
        """Where the records are."""
        return self.root / "vms"

    @property
    def network_dir(self) -> Path:
        """The ``state_dir`` for :mod:`firec.network` (network records, leases, nft lock)."""
        return self.root / "network"

    def path(self, vm_id: str) -> Path:
        """The record file of ``vm_id``."""
        return self.vms_dir / f"{validate_id(vm_id)}.json"

    @contextlib.contextmanager
    def lock(self, vm_id: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold ``vm_id``'s lock (``timeout`` seconds at most to get it; -1: forever).

        Raises:
            MachineError: another process held it for longer than ``timeout``.
        """
        self._make_dirs()
        lock = filelock.FileLock(self.vms_dir / f"{validate_id(vm_id)}.lock", mode=0o600)
        try:
            with lock.acquire(timeout=timeout):
                yield
        except filelock.Timeout:
            raise MachineError(
                f"microVM {vm_id}: another firec process is working on it (lock "
                f"{lock.lock_file} held for more than {timeout:g}s)"
            ) from None

    def _make_dirs(self) -> None:
        self.vms_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def claim(self, record: VmRecord) -> None:
        """Write the first record of a new VM, unless its id is in use: one atomic step.

        Under the id's lock: a record whose VMM or controller still runs holds
        the id (:class:`~firec.errors.InUseError`, and nothing is touched); a
        record of which nothing runs any more is reaped first (what ``firec
        gc`` would do); a VMM that answers on the new VM's API socket (one
        started without a record) holds the id too.

        Raises:
            InUseError: the id is taken.
            MachineError: a dead VM's leftovers with this id could not be removed.
            StateError: the record could not be written (nothing is left behind).
        """
        try:
            with self.lock(record.vm_id):
                existing = self.load(record.vm_id)
                if existing is not None:
                    holder = existing.holder()
                    if holder is not None:
                        raise InUseError(record.vm_id, holder)
                    reap(self, existing)
                if record.socket is not None and socket_accepts(Path(record.socket)):
                    raise InUseError(
                        record.vm_id, f"a VMM already answers on its API socket {record.socket}"
                    )
                self.create(record)
        except BaseException:
            self.prune_lock(record.vm_id)
            raise

    def create(self, record: VmRecord) -> None:
        """Write the first record of a new VM; refused when its id is taken.

        Call it holding :meth:`lock` (:meth:`claim` does both, and more).

        Raises:
            InUseError: a VM with this id is already recorded.
            StateError: the record could not be written (nothing is left behind).
        """
        self._make_dirs()
        try:
            _jsonfile.create(self.path(record.vm_id), record.to_dict())
        except FileExistsError:
            raise InUseError(
                record.vm_id, f"it is already recorded ({self.path(record.vm_id)})"
            ) from None

    def save(self, record: VmRecord) -> None:
        """Write ``record``, replacing the previous one atomically.

        Raises:
            StateError: it could not be written (the previous record is kept).
        """
        self._make_dirs()
        _jsonfile.write(self.path(record.vm_id), record.to_dict())

    def load(self, vm_id: str) -> VmRecord | None:
        """The record of ``vm_id``, or ``None``.

        Raises:
            StateError: the file is there but is not a record.
        """
        path = self.path(vm_id)
        data = _jsonfile.read(path, RECORD_FORMAT)
        if data is None:
            return None
        try:
            return VmRecord.from_dict(data)
        except FirecError as exc:
            raise StateError(path, str(exc)) from exc

    def records(self) -> list[VmRecord]:
        """Every readable record, oldest first (unreadable files are skipped)."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.vms_dir.glob("*.json"):
                with contextlib.suppress(FirecError):
                    record = self.load(path.stem)
                    if record is not None:
                        found.append(record)
        return sorted(found, key=lambda r: (r.created, r.vm_id))

    def find(self, prefix: str) -> list[VmRecord]:
        """The records whose id is ``prefix``, or else starts with it."""
        records = self.records()
        exact = [r for r in records if r.vm_id == prefix]
        return exact or [r for r in records if prefix and r.vm_id.startswith(prefix)]

    def remove(self, vm_id: str) -> None:
        """Forget ``vm_id`` (its lock file stays; :meth:`prune_locks` removes unused ones)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(vm_id).unlink()

    def prune_locks(self) -> list[str]:
        """Remove the lock files of VMs without a record that nobody holds; their ids."""
        with contextlib.suppress(FileNotFoundError):
            return [p.stem for p in self.vms_dir.glob("*.lock") if self.prune_lock(p.stem)]
        return []

    def prune_lock(self, vm_id: str) -> bool:
        """Remove ``vm_id``'s lock file if it has no record and nobody holds it; whether it did.

        (A claim stays atomic even if a process still waits on the removed
        file: the record itself is created in one step that fails if it exists.)
        """
        lock_path = self.vms_dir / f"{validate_id(vm_id)}.lock"
        if self.path(vm_id).exists() or not lock_path.exists():
            return False
        try:
            with filelock.FileLock(lock_path).acquire(timeout=0):
                if self.path(vm_id).exists():
                    return False
                lock_path.unlink(missing_ok=True)
                return True
        except filelock.Timeout:
            return False


# -- a VM this process runs --------------------------------------------------------------------


def network_state_dir(config: Config) -> Path:
    """Where ``config``'s network set-up keeps its records and leases."""
    return config.state_dir or default_network_state_dir()


class Registration:
    """The host record of a VM this process runs: claimed first, kept up to date, released.

    :meth:`firec.Machine.create` and :meth:`~firec.Machine.restore` claim the
    VM's id with a record before anything is made (refusing an id in use),
    record the VMM's pid as soon as it runs, and release the record once
    :meth:`~firec.Machine.delete` removed everything. So ``firec ls`` shows
    SDK VMs, and ``firec gc`` reaps what a killed program left.
    (``Config.host_record=False`` opts out.)

    Attributes:
        registry: where the record is.
        record: the record as last written.
    """

    def __init__(self, registry: Registry, record: VmRecord) -> None:
        self.registry = registry
        self.record = record

    @classmethod
    def claim(
        cls, registry: Registry, config: Config, launch: Launch, *, origin: str | None = None
    ) -> Registration:
        """Record a new VM, refusing an id in use (see :meth:`Registry.claim`)."""
        record = VmRecord.new(config, detached=False, origin=origin).with_launch(launch, None)
        if any(i.network is not None for i in config.network_interfaces):
            record = record.replace(network=NetworkInfo(state_dir=str(network_state_dir(config))))
        registry.claim(record)
        return cls(registry, record)

    def spawned(self, launch: Launch, pid: int | None, *, attached: Config | None = None) -> None:
        """Record where everything went and the VMM's pid (and the networked config)."""
        record = self.record.with_launch(launch, pid)
        if attached is not None and record.network is not None:
            record = record.replace(
                config=config_to_dict(attached),
                network=NetworkInfo.of(attached, Path(record.network.state_dir)),
            )
        self._save(record)

    def detach(self, version: str | None = None) -> None:
        """Mark the VM as started and meant to outlive this process."""
        self._save(
            self.record.replace(detached=True, phase=Phase.STARTED, firecracker_version=version)
        )

    def _save(self, record: VmRecord) -> None:
        self.registry.save(record)
        self.record = record

    def release(self) -> None:
        """Forget the VM (once everything it had is gone), unless another process took it over."""
        with self.registry.lock(self.record.vm_id):
            try:
                current = self.registry.load(self.record.vm_id)
            except StateError:
                return
            if current is not None and current.controller == self.record.controller:
                self.registry.remove(self.record.vm_id)
        self.registry.prune_lock(self.record.vm_id)


# -- reaping ----------------------------------------------------------------------------------


def find_unrecorded_vmm(record: VmRecord) -> list[int]:
    """Pids of processes started for ``record`` whose pid was never recorded.

    A controller that dies between spawning the VMM and recording its pid
    leaves a VMM nobody knows. After the jailer's exec, Firecracker's command
    line no longer names the jail, so it is found by what survives the exec:

    * the process listening on the recorded API socket (``SO_PEERCRED``);
    * the cgroups the jailer put it in;
    * a root (``/proc/<pid>/mountinfo``) that is the recorded jail.

    Before the exec (or plainly) its command line names it: ``--id <vm id>``
    with ``--api-sock`` (plain), or the jailer's ``--id`` and
    ``--chroot-base-dir`` of the recorded jail.
    """
    found: set[int] = set()
    if record.socket is not None:
        listener = _socket_owner(Path(record.socket))
        if listener is not None:
            found.add(listener)
    if record.cgroups:
        found.update(_pids_in_cgroups(record.cgroups))
    found.update(_find_by_command_line(record))
    found.discard(os.getpid())
    return sorted(found)


def _find_by_command_line(record: VmRecord) -> list[int]:
    wanted_id = os.fsencode(record.vm_id)
    jail_root = Path(record.jail) / "root" if record.jail else None
    jail_base = Path(record.jail).parent.parent if record.jail else None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        flags = dict(itertools.pairwise(argv))
        if flags.get(b"--id") != wanted_id:
            continue
        if jail_root is None:
            if record.socket and flags.get(b"--api-sock") == os.fsencode(record.socket):
                found.append(int(entry.name))
        elif flags.get(b"--chroot-base-dir") == os.fsencode(jail_base or ""):
            found.append(int(entry.name))  # the jailer, before its exec
        elif flags.get(b"--emulate-chroot") == os.fsencode(jail_root):
            found.append(int(entry.name))  # firec's emulator, as its emulated jailer ran it
        elif b"--start-time-us" in flags and _jail_root_of(int(entry.name)) == jail_root:
            found.append(int(entry.name))  # Firecracker as the jailer exec'd it
    return found


def _socket_owner(path: Path) -> int | None:
    """The pid of the process that listens on the Unix socket ``path``, if one does."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(os.fspath(path))
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        probe.close()
    pid, _, _ = struct.unpack("3i", creds)
    return pid if pid > 0 else None


def _jail_root_of(pid: int) -> Path | None:
    """The directory a process was chrooted or pivoted into (as its root mount shows it)."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":  # the mount at its "/": fields[3] is its source
            return Path(fields[3].replace("\\040", " "))
    return _root_of(pid)


def _pids_in_cgroups(cgroups: Sequence[str]) -> list[int]:
    """The processes in these cgroup directories (v1 ``tasks``/``cgroup.procs``, or v2)."""
    found: set[int] = set()
    for directory in cgroups:
        try:
            text = Path(directory, "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(line) for line in text.split() if line.isdigit())
    found.discard(os.getpid())
    return sorted(found)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _root_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/root"))
    except OSError:
        return None


def kill_vmm(record: VmRecord, timeout: float = 10.0) -> bool:
    """SIGKILL the recorded VMM (and a never-recorded one) and wait; whether one ran."""
    killed = False
    refs = [record.vmm] if record.vmm is not None else []
    if record.vmm is None:
        refs += [r for pid in find_unrecorded_vmm(record) if (r := ProcessRef.of(pid))]
    for ref in refs:
        if ref.signal(signal.SIGKILL):
            killed = True
            if not ref.wait_gone(timeout):
                raise MachineError(
                    f"microVM {record.vm_id}: its VMM (pid {ref.pid}) survived SIGKILL for "
                    f"{timeout:g}s"
                )
        # not our child: its parent (init) reaps it; until then its cgroups stay busy
        wait_until(ref.reaped, REAP_TIMEOUT)
    return killed


def reap(registry: Registry, record: VmRecord) -> list[str]:
    """Remove a VM and everything it had; return what was done, for people.

    Kills the VMM if it still runs (only the recorded process: a reused pid is
    left alone), removes the socket, fifos, VM directory, jail and cgroups
    (:func:`firec.vm._launch.cleanup`), tears the network down
    (:func:`firec.network.teardown_network`: taps, namespace, nft rules,
    leases), then the record. Call it holding ``registry.lock(record.vm_id)``.

    Raises:
        MachineError: something could not be removed; the record is kept
            (naming what is left), so that reaping again retries.
    """
    done = []
    if kill_vmm(record):
        done.append("killed the VMM")
    launch = record.launch()
    left = cleanup(launch)
    if left and launch.cgroups:
        # a cgroup stays busy for a moment after its last task was reaped
        wait_until(lambda: not cleanup(launch), REAP_TIMEOUT)
        left = cleanup(launch)
    for path in record.files:
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"{path}: {exc.strerror}")
    if not left:
        done.append("removed its files")
    if record.network is not None:
        from firec.network import teardown_network

        try:
            if teardown_network(record.vm_id, state_dir=record.network.state_dir):
                done.append("tore its network down")
        except (NetworkError, FirecError) as exc:
            left.append(str(exc))
    if left:
        raise MachineError(
            f"microVM {record.vm_id}: could not remove everything (record kept at "
            f"{registry.path(record.vm_id)}): " + "; ".join(left)
        )
    registry.remove(record.vm_id)
    done.append("forgot it")
    return done
