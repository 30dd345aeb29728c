"""Snapshots of microVMs: :class:`Snapshot`, an immutable record of one on disk.

A snapshot is a directory holding Firecracker's two files, the microVM state
(``vmstate``) and the guest memory (``memory``), and firec's manifest
``snapshot.json``: the snapshot type (Full or Diff), the Firecracker release
and snapshot data format it was taken with, the VM configuration it was taken
from (``GET /vm/config``), and for a diff, its parent. :meth:`Snapshot.open`
reads it back later, from another process.

Example (runs as is: firec's emulator and its tiny test guest stand in for
Firecracker and a kernel)::

    import shutil, tempfile
    from pathlib import Path

    import firec
    from firec.snapshots import Snapshot
    from firec.testing import emulator_binary
    from firec.testing.guest import build_test_guest

    work = Path(tempfile.mkdtemp())
    config = (
        firec.Config.builder(None, build_test_guest())
        .firecracker_binary(emulator_binary())
        .kernel_args("console=ttyS0")
        .machine_cfg().mem_size_mib(32).build()
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        snap = machine.snapshot(work / "snap")      # pause, snapshot (the VM stays paused)
    snap = Snapshot.open(work / "snap")             # later, anywhere
    with firec.Machine.restore(snap) as copy:       # a new VMM, running the guest again
        print(copy.state())                         # Running
    clones = firec.Machine.clone(snap, 3)  # three more, concurrently
    for clone in clones:
        clone.delete()
    shutil.rmtree(work)

Restoring never writes to the snapshot's files: Firecracker maps the memory
file privately, and in a jail the files are hard links. Whether a Firecracker
can load a snapshot follows :mod:`firec.snapshots._format`.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firec import _jsonfile
from firec.api import models
from firec.api.versions import Version
from firec.errors import SnapshotError, StateError
from firec.snapshots._format import incompatibility
from firec.snapshots._sparse import copy_sparse, merge_diff

__all__ = [
    "MANIFEST",
    "MEMORY_FILE",
    "STATE_FILE",
    "Snapshot",
    "new_directory",
    "now",
    "register_config_reader",
]

#: The manifest's file name in a snapshot directory.
MANIFEST = "snapshot.json"
#: Firecracker's microVM state file in a snapshot directory.
STATE_FILE = "vmstate"
#: Firecracker's guest memory file in a snapshot directory.
MEMORY_FILE = "memory"
_MANIFEST_VERSION = 1
#: The manifest's format (:mod:`firec._jsonfile`): ``"manifest_version": 1``.
_MANIFEST_FORMAT = _jsonfile.Format(
    "firec snapshot manifest", _MANIFEST_VERSION, key="manifest_version"
)

#: Per-clone overrides: a mapping whose values may hold ``{i}`` (the clone's
#: index), or a function of the index.
PerClone = Mapping[str, str] | Callable[[int], Mapping[str, str]]


#: What builds :meth:`Snapshot.config`'s config (``firec.vm.Config.from_snapshot``,
#: which :mod:`firec.vm.config` registers when it is imported); empty before.
_CONFIG_READER: list[Callable[[Snapshot, str | None], Any]] = []


def register_config_reader(reader: Callable[[Snapshot, str | None], Any]) -> None:
    """Make :meth:`Snapshot.config` build its config with ``reader(snapshot, vm_id)``.

    :mod:`firec.vm.config` registers ``Config.from_snapshot`` when it is
    imported: a snapshot knows nothing of configs (the ``vm`` room), and this
    room may not import that one (docs/architecture.md).
    """
    _CONFIG_READER[:] = [reader]


@dataclass(frozen=True)
class Snapshot:
    """One snapshot on disk. Immutable: every method returns something new.

    Attributes:
        directory: the snapshot directory.
        state_file: the microVM state file.
        memory_file: the guest memory file.
        type: :attr:`~firec.api.models.SnapshotType.FULL` or ``DIFF``.
        firecracker_version: the Firecracker release that took it.
        snapshot_format: the snapshot data format of the state file.
        vm_id: the id of the microVM it was taken from.
        parent: for a diff, the directory of the snapshot it applies to.
        created_at: when it was taken (UTC, ISO 8601).
        firecracker_binary: the executable that took it (a default for restores).
        jailed: whether the VM ran in a jail (its paths are then jail paths).
        kernel_image: the VM's kernel on the host (Firecracker 1.0 forgets it after a restore).
    """

    directory: Path
    state_file: Path
    memory_file: Path
    type: models.SnapshotType
    firecracker_version: Version
    snapshot_format: Version
    vm_id: str
    vm_config_json: str
    host_paths_json: str = "{}"
    parent: Path | None = None
    created_at: str = ""
    firecracker_binary: Path | None = None
    jailed: bool = False
    kernel_image: Path | None = None

    def __post_init__(self) -> None:
        # one spelling of the same JSON, so that equal snapshots compare equal
        for name in ("vm_config_json", "host_paths_json"):
            canonical = json.dumps(json.loads(getattr(self, name)), sort_keys=True)
            object.__setattr__(self, name, canonical)

    # -- reading ---------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Snapshot:
        """Read the snapshot in ``directory`` from its manifest.

        Raises:
            SnapshotError: no manifest, or one firec cannot read (one a newer
                firec wrote is refused, naming both manifest versions).
        """
        root = Path(directory).resolve()
        path = root / MANIFEST
        try:
            data = _jsonfile.read(path, _MANIFEST_FORMAT)
        except StateError as exc:
            raise SnapshotError(f"cannot read {path}: {exc.reason}", path=str(path)) from exc
        if data is None:
            raise SnapshotError(f"{root} holds no snapshot: {MANIFEST} is missing", path=str(path))
        try:
            parent = data.get("parent")
            binary = data.get("firecracker_binary")
            kernel = data.get("kernel_image")
            return cls(
                directory=root,
                state_file=root / data["state_file"],
                memory_file=root / data["memory_file"],
                type=models.SnapshotType(data["type"]),
                firecracker_version=Version.parse(data["firecracker_version"]),
                snapshot_format=Version.parse(data["snapshot_format"]),
                vm_id=str(data["vm_id"]),
                vm_config_json=json.dumps(data["vm_config"], sort_keys=True),
                host_paths_json=json.dumps(data.get("host_paths") or {}, sort_keys=True),
                parent=(root / parent).resolve() if parent else None,
                created_at=str(data.get("created_at", "")),
                firecracker_binary=Path(binary) if binary else None,
                jailed=bool(data.get("jailed", False)),
                kernel_image=Path(kernel) if kernel else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"{path} is not a firec snapshot manifest: {exc}") from None

    def manifest(self) -> dict[str, Any]:
        """The manifest document (what ``snapshot.json`` holds)."""
        parent = os.path.relpath(self.parent, self.directory) if self.parent else None
        return {
            "manifest_version": _MANIFEST_VERSION,
            "type": self.type.value,
            "state_file": os.path.relpath(self.state_file, self.directory),
            "memory_file": os.path.relpath(self.memory_file, self.directory),
            "firecracker_version": str(self.firecracker_version),
            "snapshot_format": str(self.snapshot_format),
            "vm_id": self.vm_id,
            "created_at": self.created_at,
            "parent": parent,
            "firecracker_binary": str(self.firecracker_binary) if self.firecracker_binary else None,
            "jailed": self.jailed,
            "kernel_image": str(self.kernel_image) if self.kernel_image else None,
            "vm_config": self.vm_config,
            "host_paths": self.host_paths,
        }

    def _save(self) -> None:
        try:
            _jsonfile.write(
                self.directory / MANIFEST, self.manifest(), _MANIFEST_FORMAT, mode=0o644
            )
        except StateError as exc:
            raise SnapshotError(
                f"cannot write the manifest {exc.path}: {exc.reason}", path=exc.path
            ) from exc

    # -- facts -------------------------------------------------------------------------

    @property
    def vm_config(self) -> dict[str, Any]:
        """The VM configuration it was taken from, as ``GET /vm/config`` gave it (a copy).

        Paths are as Firecracker saw them (inside the jail when :attr:`jailed`).
        """
        config: dict[str, Any] = json.loads(self.vm_config_json)
        return config

    @property
    def host_paths(self) -> dict[str, str]:
        """Firecracker's paths of the VM's files (kernel, drives...) -> their host paths."""
        paths: dict[str, str] = json.loads(self.host_paths_json)
        return paths

    @functools.cached_property
    def _vm_config(self) -> Mapping[str, Any]:
        """:attr:`vm_config` parsed once, for reading only (a snapshot may be restored often)."""
        return self.vm_config

    @property
    def boot_args(self) -> str | None:
        """The kernel command line the guest was booted with."""
        boot = self._vm_config.get("boot-source") or {}
        args = boot.get("boot_args")
        return str(args) if args is not None else None

    @property
    def mem_size_mib(self) -> int:
        """The guest memory size, in MiB."""
        machine = self._vm_config.get("machine-config") or {}
        return int(machine["mem_size_mib"])

    @property
    def memory_size(self) -> int:
        """The size the memory file must have, in bytes."""
        return self.mem_size_mib << 20

    @property
    def interfaces(self) -> dict[str, str]:
        """The network interfaces of the snapshot: ``iface_id`` -> tap name."""
        return {
            iface["iface_id"]: iface["host_dev_name"]
            for iface in self._vm_config.get("network-interfaces") or []
        }

    @property
    def files(self) -> tuple[Path, Path]:
        """The state file and the memory file."""
        return (self.state_file, self.memory_file)

    # -- checks ----------------------------------------------------------------------

    def incompatibility(
        self, version: str | Version, snapshot_format: Version | None = None
    ) -> str | None:
        """Why Firecracker ``version`` cannot load this snapshot, or ``None`` if it can.

        ``snapshot_format`` is the format that Firecracker writes, when known
        (:func:`firec.snapshots._format.probe`).
        """
        target = Version.parse(version) if isinstance(version, str) else version
        return incompatibility(
            self.firecracker_version, self.snapshot_format, target, snapshot_format
        )

    def compatible_with(self, version: str | Version) -> bool:
        """Whether Firecracker ``version`` can load this snapshot.

        Firecracker 1.7 and later load a snapshot whose data format has their
        major version and no newer minor one; 1.0 to 1.6 load formats up to
        their own release; neither era loads the other's::

            snap.compatible_with("1.14.2")   # taken with 1.13 or 1.14: True
        """
        return self.incompatibility(version) is None

    def check_compatible(
        self, version: str | Version, snapshot_format: Version | None = None
    ) -> None:
        """Refuse Firecracker ``version`` if it cannot load this snapshot.

        Raises:
            SnapshotError: naming both versions and why.
        """
        why = self.incompatibility(version, snapshot_format)
        if why is not None:
            raise SnapshotError(
                f"snapshot {self.directory} was taken with Firecracker {self.firecracker_version} "
                f"(snapshot data format v{self.snapshot_format}) and cannot be loaded by "
                f"Firecracker {version}: {why}; restore it with the Firecracker that took it",
                path=str(self.directory),
                snapshot_version=str(self.firecracker_version),
                target_version=str(version),
            )

    def check_files(self, *, memory: bool = True) -> None:
        """Refuse a snapshot whose state file is missing, or memory file missing or truncated.

        Raises:
            SnapshotError: naming the file, with its size and the size it must have.
        """
        if not self.state_file.is_file():
            raise SnapshotError(
                f"snapshot {self.directory}: the state file {self.state_file} is missing",
                path=str(self.state_file),
            )
        if not memory:
            return
        try:
            size = self.memory_file.stat().st_size
        except OSError as exc:
            raise SnapshotError(
                f"snapshot {self.directory}: the memory file {self.memory_file} cannot be used: "
                f"{exc.strerror}",
                path=str(self.memory_file),
            ) from None
        hotplug = self._vm_config.get("memory-hotplug")
        if size < self.memory_size or (size != self.memory_size and not hotplug):
            raise SnapshotError(
                f"snapshot {self.directory}: the memory file {self.memory_file} has {size} bytes, "
                f"but the guest has {self.mem_size_mib} MiB ({self.memory_size} bytes): "
                "it is truncated or belongs to another snapshot",
                path=str(self.memory_file),
            )

    # -- diffs -------------------------------------------------------------------------

    def parent_snapshot(self) -> Snapshot | None:
        """The snapshot this diff applies to (``None`` for a full snapshot)."""
        return Snapshot.open(self.parent) if self.parent is not None else None

    def chain(self) -> list[Snapshot]:
        """The snapshots to merge, oldest (the full one) first, ending with this one.

        Raises:
            SnapshotError: a diff without a parent, or a cycle.
        """
        chain = [self]
        while chain[-1].type is models.SnapshotType.DIFF:
            parent = chain[-1].parent_snapshot()
            if parent is None:
                raise SnapshotError(
                    f"diff snapshot {chain[-1].directory} names no parent", path=str(self.directory)
                )
            if any(parent.directory == s.directory for s in chain):
                raise SnapshotError(f"snapshot chain of {self.directory} loops")
            chain.append(parent)
        return chain[::-1]

    def flatten(self, directory: str | os.PathLike[str]) -> Snapshot:
        """Merge this diff and its ancestors into a full snapshot in ``directory``.

        The memory files are merged oldest first (:func:`firec.snapshots._sparse.merge_diff`,
        sparse-aware); the state file is this snapshot's. The originals are
        only read. A full snapshot is simply copied.
        """
        target = new_directory(directory)
        try:
            chain = self.chain()
            memory = target / MEMORY_FILE
            copy_sparse(chain[0].memory_file, memory)
            for diff in chain[1:]:
                merge_diff(memory, diff.memory_file, memory)
            shutil.copyfile(self.state_file, target / STATE_FILE)
            flat = Snapshot(
                directory=target,
                state_file=target / STATE_FILE,
                memory_file=memory,
                type=models.SnapshotType.FULL,
                firecracker_version=self.firecracker_version,
                snapshot_format=self.snapshot_format,
                vm_id=self.vm_id,
                vm_config_json=self.vm_config_json,
                host_paths_json=self.host_paths_json,
                created_at=now(),
                firecracker_binary=self.firecracker_binary,
                jailed=self.jailed,
                kernel_image=self.kernel_image,
            )
            flat._save()
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return flat

    # -- configs and clones ---------------------------------------------------------------

    def config(self, vm_id: str | None = None) -> Any:
        """A :class:`firec.vm.Config` for a VM restored from this snapshot.

        The same as ``firec.Config.from_snapshot(snapshot, vm_id)``, which
        builds it and says what it holds. Configs belong to the ``vm`` room,
        which this one may not import (docs/architecture.md): importing
        :mod:`firec.vm.config` (as ``firec.Config``, ``firec.Machine`` and
        every part of :mod:`firec.vm` do) teaches this method how
        (:func:`register_config_reader`).

        Raises:
            SnapshotError: nothing in this process imported firec.vm yet (``firec.Snapshot``
                does; ``firec.snapshots.Snapshot`` alone does not)
                (the message says what to call instead).
        """
        if not _CONFIG_READER:
            raise SnapshotError(
                f"Snapshot.config() of {self.directory}: it is firec.vm.Config.from_snapshot, "
                "and firec.vm is not imported yet in this process; call "
                "firec.Config.from_snapshot(snapshot) (or import firec.vm first)",
                path=str(self.directory),
            )
        return _CONFIG_READER[0](self, vm_id)


def now() -> str:
    """The time a snapshot is made, as its manifest says it (UTC, ISO 8601)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def new_directory(directory: str | os.PathLike[str]) -> Path:
    """Make ``directory`` for a new snapshot; refuse one that already holds files of one."""
    target = Path(directory).resolve()
    for name in (MANIFEST, STATE_FILE, MEMORY_FILE):
        if (target / name).exists():
            raise SnapshotError(
                f"{target} already holds a snapshot ({name}): pick a new directory",
                path=str(target),
            )
    target.mkdir(parents=True, exist_ok=True)
    return target
