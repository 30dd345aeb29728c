"""The registry of VM records, and the claim of a VM's id: :class:`Registry`, :class:`Registration`.

:class:`Registry` keeps the records of one state directory: each change to
one VM is made under that VM's lock, which every firec process honours, and
:meth:`Registry.claim` writes a new VM's first record in one step that fails
when its id is in use. :class:`Registration` is the record of a VM this
process runs, from its claim to its release.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from firec.host.registry import VmRecord
    >>> from firec.vm.config import Config
    >>> registry = Registry(tempfile.mkdtemp())
    >>> registry.claim(VmRecord.new(Config(vm_id="vm-1", kernel_image=Path("/k")), detached=False))
    >>> [record.vm_id for record in registry.records()]
    ['vm-1']
    >>> registry.claim(VmRecord.new(Config(vm_id="vm-1", kernel_image=Path("/k")), detached=False))
    Traceback (most recent call last):
    ...
    firec.errors.InUseError: ...
    >>> import shutil; shutil.rmtree(registry.root)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from firec import _jsonfile, _lockfile
from firec._proc import ProcessRef
from firec._statedirs import network_dir, registry_dir
from firec.errors import FirecError, InUseError, MachineError, StateError
from firec.vm import _codec
from firec.vm._launch import Launch, socket_accepts
from firec.vm._registry.reaping import reap
from firec.vm._registry.records import VM_RECORD, NetworkInfo, Phase, VmRecord
from firec.vm.config import Config
from firec.vm.jailer import validate_id

__all__ = ["LOCK_TIMEOUT", "Registration", "Registry", "network_state_dir"]

#: Seconds to wait for another process's lock on a VM before giving up.
LOCK_TIMEOUT = 30.0


class Registry:
    """The VM records of one state directory.

    Reads need no lock (records are replaced atomically); changes to one VM
    are made under its lock, :meth:`lock`, which every firec process honours.

    Args:
        root: the state directory (default: :func:`~firec.host.registry.state_dir`).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else registry_dir()

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
        # the lock _jsonfile.Lock takes, taken directly: the registry never nests its locks
        lock_file = os.path.join(self.root, "vms", f"{validate_id(vm_id)}.lock")
        try:
            try:
                fd = _lockfile.acquire(lock_file, timeout)
            except FileNotFoundError:  # no state directory yet
                self._make_dirs()
                fd = _lockfile.acquire(lock_file, timeout)
        except _lockfile.Timeout:
            raise MachineError(
                f"microVM {vm_id}: another firec process is working on it (lock "
                f"{lock_file} held for more than {timeout:g}s)"
            ) from None
        try:
            yield
        finally:
            _lockfile.release(fd)

    def _make_dirs(self) -> None:
        self.vms_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def claim(self, record: VmRecord) -> None:
        """Write the first record of a new VM, unless its id is in use: one atomic step.

        A record whose VMM or controller still runs holds the id
        (:class:`~firec.errors.InUseError`, and nothing is touched); a record
        of which nothing runs any more is reaped first (what ``firec gc``
        would do), under the id's lock; a VMM that answers on the new VM's API
        socket (one started without a record) holds the id too. An id without
        a record needs no lock: the record's creation, which fails when another
        process made one first, claims it (and the other process's record
        then says who holds the id, as above).

        Raises:
            InUseError: the id is taken.
            MachineError: a dead VM's leftovers with this id could not be removed.
            StateError: the record could not be written (nothing is left behind).
        """
        try:
            if not os.path.lexists(self.path(record.vm_id)):  # the usual case: a new id
                self._refuse_answering_socket(record)
                with contextlib.suppress(InUseError):  # recorded meanwhile: see by whom
                    self.create(record)
                    return
            with self.lock(record.vm_id):
                existing = self.load(record.vm_id)
                if existing is not None:
                    holder = existing.holder()
                    if holder is not None:
                        raise InUseError(record.vm_id, holder)
                    reap(self, existing)
                self._refuse_answering_socket(record)
                self.create(record)
        except BaseException:
            self.prune_lock(record.vm_id)
            raise

    @staticmethod
    def _refuse_answering_socket(record: VmRecord) -> None:
        """:class:`~firec.errors.InUseError` if a VMM answers on ``record``'s API socket."""
        if record.socket is not None and socket_accepts(record.socket):
            raise InUseError(
                record.vm_id, f"a VMM already answers on its API socket {record.socket}"
            )

    def create(self, record: VmRecord) -> None:
        """Write the first record of a new VM; refused when its id is taken.

        Call it holding :meth:`lock` (:meth:`claim` does both, and more).

        Raises:
            InUseError: a VM with this id is already recorded.
            StateError: the record could not be written (nothing is left behind).
        """
        try:  # (_jsonfile makes the directory when it is missing)
            _jsonfile.create(self.path(record.vm_id), record.to_dict(), VM_RECORD)
        except FileExistsError:
            raise InUseError(
                record.vm_id, f"it is already recorded ({self.path(record.vm_id)})"
            ) from None

    def save(self, record: VmRecord) -> None:
        """Write ``record``, replacing the previous one atomically.

        Raises:
            StateError: it could not be written (the previous record is kept).
        """
        _jsonfile.write(self.path(record.vm_id), record.to_dict(), VM_RECORD)  # (and its directory)

    def load(self, vm_id: str) -> VmRecord | None:
        """The record of ``vm_id``, or ``None``.

        Raises:
            StateError: the file is there but is not a record (of this firec's
                format: a newer firec's record is refused, naming both formats).
        """
        path = self.path(vm_id)
        data = _jsonfile.read(path, VM_RECORD)
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
        record = self.path(vm_id)
        lock_file = self.vms_dir / f"{vm_id}.lock"
        if record.exists():
            return False
        try:  # one try, on the file if it is there (none is made)
            fd = _lockfile.acquire(lock_file, 0, create=False)
        except (FileNotFoundError, _lockfile.Timeout):
            return False
        try:
            if record.exists():
                return False
            lock_file.unlink(missing_ok=True)
            return True
        finally:
            _lockfile.release(fd)


# -- a VM this process runs --------------------------------------------------------------------


def network_state_dir(config: Config) -> Path:
    """Where ``config``'s network set-up keeps its records and leases."""
    return config.state_dir or network_dir()


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
        self._launch: Launch | None = None  # the one the record was claimed with

    @classmethod
    def claim(
        cls, registry: Registry, config: Config, launch: Launch, *, origin: str | None = None
    ) -> Registration:
        """Record a new VM, refusing an id in use (see :meth:`Registry.claim`)."""
        record = VmRecord.new(config, detached=False, origin=origin, launch=launch)
        if any(i.network is not None for i in config.network_interfaces):
            record = record.replace(network=NetworkInfo(state_dir=str(network_state_dir(config))))
        registry.claim(record)
        registration = cls(registry, record)
        registration._launch = launch
        return registration

    def spawned(self, launch: Launch, pid: int | None, *, attached: Config | None = None) -> None:
        """Record where everything went and the VMM's pid (and the networked config)."""
        if launch is self._launch and attached is None:  # the claim's: only the pid is new
            self._save(self.record.with_vmm(ProcessRef.of(pid) if pid is not None else None))
            return
        record = self.record.with_launch(launch, pid)
        if attached is not None and record.network is not None:
            record = record.replace(
                config=attached.to_dict(),
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
        vm_id = self.record.vm_id
        mine = _codec.encode(self.record.controller)
        with self.registry.lock(vm_id):
            try:  # whose it is needs the JSON only (a whole record takes longer to read)
                current = _jsonfile.read(self.registry.path(vm_id), VM_RECORD)
            except StateError:
                return
            if current is not None:
                if current.get("controller") != mine:
                    return  # another process's now: its lock file stays too
                self.registry.remove(vm_id)
            # the lock file goes too, as prune_lock would remove it: whoever waits
            # on it then locks the file made anew (see firec._lockfile)
            (self.registry.vms_dir / f"{vm_id}.lock").unlink(missing_ok=True)
