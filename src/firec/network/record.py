"""The record of a VM's network set-up: each step written down before it is taken.

:func:`~firec.network.setup.setup_network` writes one record a VM, at
``<state_dir>/networks/<vm_id>.json``, and adds each step (a lease, the
namespace, a link, nft rules, a CNI network) to it before taking it; so a
new process can undo all of it after a crash
(:func:`~firec.network.teardown.teardown_network`). The record also names
the process that set the network up (:func:`network_owner`).

Example::

    >>> record_path("/var/lib/firec", "vm1")
    PosixPath('/var/lib/firec/networks/vm1.json')
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

from firec import _jsonfile
from firec._proc import ProcessRef
from firec.errors import NetworkError
from firec.network.names import validate_vm_id

__all__ = ["RECORD_FORMAT", "NetworkRecord", "already_set_up", "network_owner", "record_path"]

#: The format of network records (:mod:`firec._jsonfile`).
_NETWORK_RECORD = _jsonfile.Format("firec-network", 1)
#: What a network record's ``format`` key holds.
RECORD_FORMAT = str(_NETWORK_RECORD)


def record_path(state_dir: str | os.PathLike[str], vm_id: str) -> Path:
    """Where the record of the VM's network set-up is kept."""
    return Path(state_dir) / "networks" / f"{validate_vm_id(vm_id)}.json"


class NetworkRecord:
    """The write-ahead record of one VM's set-up steps.

    It names the process that set the network up (``owner``: pid, start time
    and boot, as :class:`~firec.vm.process.ProcessRef`), so that a clean-up of
    what crashed processes left (``firec gc``) never touches the network of a
    VM whose owner still runs. Written with :mod:`firec._jsonfile`: a full
    disk leaves no record behind, never an empty one.

    Attributes:
        path: the record's file.
        data: what it holds: ``format``, ``vm_id``, ``host_netns``, ``owner``
            and the ``steps`` taken, in order.
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, path: Path, vm_id: str, host_netns: str | None) -> NetworkRecord:
        """Write a new record, with no step yet, owned by this process.

        Raises:
            NetworkError: the VM already has one (its network is set up).
        """
        owner = ProcessRef.of(os.getpid())
        data: dict[str, Any] = {
            "vm_id": vm_id,
            "host_netns": host_netns,
            "owner": dataclasses.asdict(owner) if owner is not None else None,
            "steps": [],
        }
        try:
            _jsonfile.create(path, data, _NETWORK_RECORD, mode=0o644)
        except FileExistsError:
            raise already_set_up(vm_id, path) from None
        return cls(path, data)

    @classmethod
    def load(cls, path: Path) -> NetworkRecord | None:
        """The record at ``path``, or ``None`` when there is none."""
        data = _jsonfile.read(path, _NETWORK_RECORD)
        return cls(path, data) if data is not None else None

    @property
    def owner(self) -> ProcessRef | None:
        """The process that set the network up (``None`` in records older than this field)."""
        owner = self.data.get("owner")
        if not isinstance(owner, dict):
            return None
        try:
            return ProcessRef(**owner)
        except TypeError:
            return None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The steps taken (each a dict with its ``kind``), in order."""
        steps: list[dict[str, Any]] = self.data["steps"]
        return steps

    def add(self, step: dict[str, Any]) -> None:
        """Record ``step``, *before* taking it (undoing a step not taken is a no-op)."""
        self.steps.append(step)
        self.write()

    def write(self) -> None:
        """Save the record as it is now."""
        # replaced atomically, not fsynced: what it records (links, namespaces, rules)
        # does not survive a power loss either, only a crash of this process
        _jsonfile.write(self.path, self.data, _NETWORK_RECORD, mode=0o644)

    def remove(self) -> None:
        """Delete the record (all its steps are undone)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def network_owner(vm_id: str, *, state_dir: str | os.PathLike[str]) -> ProcessRef | None:
    """The process that set up ``vm_id``'s network, if it has a record that names one.

    ``firec gc`` leaves a network alone while its owner runs.
    """
    record = NetworkRecord.load(record_path(state_dir, vm_id))
    return record.owner if record is not None else None


def already_set_up(vm_id: str, path: Path) -> NetworkError:
    """The error for a VM whose network has a record at ``path`` already."""
    return NetworkError(
        f"the network of VM {vm_id!r} is already set up (record {path}); tear it down "
        "first (firec.network.teardown_network)"
    )
