"""Snapshots: immutable values naming a microVM's saved state and memory.

* :class:`Snapshot` (``snapshot.py``): a snapshot on disk: its state file,
  memory file, manifest (``firec.json``), the VM config it was taken from,
  and, for a diff, its parent. It checks its files and whether a Firecracker
  version can load it, and knows nothing about machines: restoring and
  cloning live with them (:meth:`firec.vm.Machine.restore`,
  :meth:`firec.vm.Machine.clone`).
* ``_format.py``: what a snapshot file says of the Firecracker that wrote it.
* ``_sparse.py``: sparse copies and merging a diff into its base's memory.
* :mod:`firec.snapshots.uffd`: serving guest memory from a snapshot through
  userfaultfd (``python -m firec.snapshots.uffd``); the kernel calls it
  makes are in ``_userfaultfd.py``, its handshake with Firecracker in
  ``_handshake.py``.

Example::

    >>> from firec.snapshots import Snapshot
    >>> Snapshot.open("/nonexistent")
    Traceback (most recent call last):
    ...
    firec.errors.SnapshotError: /nonexistent: no such snapshot directory
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firec._lazy import lazy_door

if TYPE_CHECKING:
    from firec.snapshots import uffd
    from firec.snapshots.snapshot import Snapshot
    from firec.snapshots.uffd import UffdHandler

__all__ = ["Snapshot", "UffdHandler", "uffd"]

__getattr__, __dir__ = lazy_door(
    __name__,
    {
        "Snapshot": "firec.snapshots.snapshot",
        "UffdHandler": "firec.snapshots.uffd",
    },
    submodules=("uffd",),
)
