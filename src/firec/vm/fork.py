"""What :meth:`firec.Machine.fork` returns: the children, and what the parent paid.

>>> from firec.vm.fork import Fork
>>> Fork(children=[], snapshot=None, paused_for=0.004, children_in=0.03).paused_for
0.004
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from firec.snapshots.snapshot import Snapshot

__all__ = ["Fork"]

M = TypeVar("M")


@dataclass(frozen=True)
class Fork(Generic[M]):
    """A running microVM's branch: ``children`` restored from its state at one moment.

    Attributes:
        children: the new machines, running, each a VM of its own (they are
            the caller's to delete).
        snapshot: the snapshot they were restored from (its files are in the
            parent's directory, removed with the parent; the children keep
            running on their mapped memory).
        paused_for: seconds the parent was paused (its snapshot being taken).
        children_in: seconds from the fork's start until every child ran.
        diff: whether the parent's pause wrote only the pages it changed since
            its previous snapshot (the children's snapshot was merged after).
    """

    children: list[M]
    snapshot: Snapshot | None
    paused_for: float
    children_in: float
    diff: bool = False
