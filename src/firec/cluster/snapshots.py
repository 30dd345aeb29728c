"""Snapshots in a cluster: :class:`ClusterSnapshot` (where one is, what it needs) and the stores.

A snapshot taken on one host is restored on another through a
:class:`SnapshotStore`:

* :class:`SharedDirectory`: a directory every host mounts at the same path
  (NFS or similar). Snapshots are taken into it and restored from it as
  they are; nothing is copied.
* :class:`CopyFromHost` (the default): snapshots stay on the host that took
  them; a host asked to restore one it lacks copies it from that host,
  through Ray, in chunks of at most 4 MiB. Only the memory file's data is
  sent (its holes stay holes: the copy is as sparse as the original), each
  file's SHA-256 is computed by the host that has it and checked by the one
  that copied it, and a copy is kept for the next restore.

A store for object storage (S3 and the like) fits the same interface: its
:meth:`~SnapshotStore.directory_for` names a local staging directory,
:meth:`~SnapshotStore.keep` uploads what was taken there and
:meth:`~SnapshotStore.bring` downloads and checks it. It is not written yet.

Example::

    >>> store = SharedDirectory("/mnt/snapshots")
    >>> str(store.directory_for(Path("/var/lib/firec/snapshots"), "base"))
    '/mnt/snapshots/base'
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from firec.cluster.hosts import CpuInfo
from firec.errors import SnapshotError
from firec.snapshots.snapshot import MANIFEST

__all__ = [
    "CHUNK",
    "ClusterSnapshot",
    "CopyFromHost",
    "FileDescription",
    "SharedDirectory",
    "SnapshotStore",
    "describe_file",
]

#: The largest piece of a file sent in one call.
CHUNK = 4 << 20
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True, kw_only=True)
class ClusterSnapshot:
    """A snapshot somewhere in the cluster, and what a host needs to restore it.

    Attributes:
        name: its name (its directory's name in a store).
        host: the host that took it (and, with :class:`CopyFromHost`, holds it).
        directory: its directory on that host, or in the shared directory.
        shared: ``directory`` is readable by every host as it is.
        vm_id: the VM it was taken from.
        firecracker_version, snapshot_format: the Firecracker that took it, and its data format.
        cpu: the CPU of the host that took it.
        cpu_template: the VM's static CPU template, if it had one.
        vcpus, memory_mib: the VM's size (every restore has it).
    """

    name: str
    host: str
    directory: Path
    shared: bool
    vm_id: str
    firecracker_version: str
    snapshot_format: str
    cpu: CpuInfo
    cpu_template: str | None = None
    vcpus: int = 1
    memory_mib: int = 128


@dataclass(frozen=True)
class FileDescription:
    """One file of a snapshot, as the host that has it sees it.

    Attributes:
        name: its name in the snapshot directory.
        size: its length (holes included).
        extents: its data, as (offset, length) pairs; the rest are holes.
        sha256: the digest of all of it (holes read as zeros).
    """

    name: str
    size: int
    extents: tuple[tuple[int, int], ...] = field(default=())
    sha256: str = ""


def describe_file(path: Path) -> FileDescription:
    """The size, data extents and digest of ``path`` (``SEEK_DATA``/``SEEK_HOLE``)."""
    digest = hashlib.sha256()
    extents: list[tuple[int, int]] = []
    with path.open("rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            offset = end
        position = 0
        for start, length in extents:
            _feed_zeros(digest, start - position)
            f.seek(start)
            left = length
            while left:
                block = f.read(min(left, CHUNK))
                digest.update(block)
                left -= len(block)
            position = start + length
        _feed_zeros(digest, size - position)
    return FileDescription(path.name, size, tuple(extents), digest.hexdigest())


def _feed_zeros(digest: hashlib._Hash, count: int) -> None:
    while count > 0:
        step = min(count, len(_ZEROS))
        digest.update(_ZEROS[:step])
        count -= step


#: Reads ``length`` bytes at ``offset`` of a file of the snapshot on the host that has it.
ChunkReader = Callable[[str, int, int], Awaitable[bytes]]
#: Describes every file of the snapshot on the host that has it.
Describer = Callable[[], Awaitable[list[FileDescription]]]


class SnapshotStore(Protocol):
    """Where a cluster's snapshots are kept, and how a host gets one it lacks."""

    @property
    def shared(self) -> bool:
        """Whether every host reads the store's directories as they are."""
        ...

    def directory_for(self, snapshot_dir: Path, name: str) -> Path:
        """Where a host whose own snapshot directory is ``snapshot_dir`` takes snapshot ``name``."""
        ...

    async def bring(
        self,
        snapshot: ClusterSnapshot,
        snapshot_dir: Path,
        describe: Describer,
        read: ChunkReader,
    ) -> Path:
        """Make ``snapshot`` readable on this host; return its directory here.

        ``describe`` and ``read`` reach the host that holds it.
        """
        ...


@dataclass(frozen=True)
class SharedDirectory:
    """Snapshots in a directory every host mounts at the same path: used as they are.

    Args:
        root: the shared directory.
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def shared(self) -> bool:
        """Always: every host reads the directory."""
        return True

    def directory_for(self, snapshot_dir: Path, name: str) -> Path:
        """``root/name``, whatever the host."""
        return self.root / name

    async def bring(
        self,
        snapshot: ClusterSnapshot,
        snapshot_dir: Path,
        describe: Describer,
        read: ChunkReader,
    ) -> Path:
        """The snapshot's own directory.

        Raises:
            SnapshotError: this host does not see it (the directory is not
                mounted here).
        """
        if not (snapshot.directory / MANIFEST).exists():
            raise SnapshotError(
                f"snapshot {snapshot.name} is not at {snapshot.directory} on this host: "
                f"is {self.root} mounted here?",
                path=str(snapshot.directory),
            )
        return snapshot.directory


@dataclass(frozen=True)
class CopyFromHost:
    """Snapshots kept where they were taken; copied, in chunks through Ray, where restored."""

    @property
    def shared(self) -> bool:
        """Never: each host has its own."""
        return False

    def directory_for(self, snapshot_dir: Path, name: str) -> Path:
        """``snapshot_dir/name`` on the host that takes it."""
        return snapshot_dir / name

    async def bring(
        self,
        snapshot: ClusterSnapshot,
        snapshot_dir: Path,
        describe: Describer,
        read: ChunkReader,
    ) -> Path:
        """Copy ``snapshot`` to ``snapshot_dir/copies/<host>/<name>``, unless a copy is there.

        The files are written under a temporary name, checked against the
        digests the holding host computed, then renamed into place.

        Raises:
            SnapshotError: a digest does not match (the copy is removed).
        """
        target = snapshot_dir / "copies" / snapshot.host / snapshot.name
        if (target / MANIFEST).exists():
            return target
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            files = await describe()
            # the manifest last: a directory with one holds every other file
            for description in sorted(files, key=lambda d: d.name == MANIFEST):
                await _copy_file(description, partial / description.name, read)
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target


async def _copy_file(description: FileDescription, path: Path, read: ChunkReader) -> None:
    """Copy one file's extents into ``path`` (holes stay holes) and check its digest."""
    digest = hashlib.sha256()
    position = 0
    with path.open("wb") as f:
        for start, length in description.extents:
            _feed_zeros(digest, start - position)
            offset = start
            while offset < start + length:
                block = await read(description.name, offset, min(CHUNK, start + length - offset))
                if not block:
                    raise SnapshotError(
                        f"{description.name} ended at {offset} bytes on the host that has it "
                        f"(it said {description.size})",
                        path=str(path),
                    )
                os.pwrite(f.fileno(), block, offset)
                digest.update(block)
                offset += len(block)
            position = start + length
        _feed_zeros(digest, description.size - position)
        f.truncate(description.size)
    if digest.hexdigest() != description.sha256:
        raise SnapshotError(
            f"the copy of {description.name} does not match its SHA-256 digest "
            f"({digest.hexdigest()[:16]}... here, {description.sha256[:16]}... on its host)",
            path=str(path),
        )
