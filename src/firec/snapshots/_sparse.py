"""Sparse files: find their data, copy them without filling holes, merge a diff snapshot.

A diff snapshot's memory file holds only the pages written since the
previous snapshot, at their offsets; everything else is a hole. Merging it
onto its base (what Firecracker's ``rebase-snap`` tool does) copies just
those data extents over a copy of the base, found with ``lseek(SEEK_DATA)``
and ``lseek(SEEK_HOLE)``::

    from firec.snapshots._sparse import merge_diff

    merge_diff("base/memory", "diff/memory", "flat/memory")

The copy of the base is a reflink where the filesystem can (btrfs, XFS),
otherwise a copy of its data extents that keeps its holes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from firec.errors import SnapshotError

__all__ = ["copy_sparse", "data_extents", "merge_diff"]

#: ``FICLONE``: make the destination share the source's blocks (copy-on-write).
FICLONE = 0x40049409
_CHUNK = 8 << 20


def data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` byte ranges of ``fd`` that hold data (not holes), in order.

    On a filesystem that cannot report holes, the whole file is one extent.
    """
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield offset, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        count = min(_CHUNK, end - offset)
        try:
            done = os.copy_file_range(src, dst, count, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            data = os.pread(src, count, offset)
            done = os.pwrite(dst, data, offset) if data else 0
        if done <= 0:
            raise OSError(errno.EIO, f"short copy at offset {offset}")
        offset += done


def _reflink(src: int, dst: int) -> bool:
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError:
        return False
    return True


def _copy_fd(src: int, dst: int) -> None:
    """Make ``dst`` (empty) a copy of ``src``: a reflink, or the data extents only."""
    size = os.fstat(src).st_size
    if _reflink(src, dst):
        return
    for start, end in data_extents(src):
        _copy_range(src, dst, start, end)
    os.ftruncate(dst, size)


def copy_sparse(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Copy ``source`` to a new file ``target``, keeping its holes (or sharing blocks).

    ``target`` must not exist. Its mode is ``source``'s.
    """
    with open(source, "rb") as src:
        mode = os.fstat(src.fileno()).st_mode & 0o777
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            _copy_fd(src.fileno(), fd)
        except BaseException:
            os.close(fd)
            os.unlink(target)
            raise
        os.close(fd)


def _check_holes_are_reported(fd: int, path: Path) -> None:
    """Refuse a diff whose holes the filesystem hides: its zeros would overwrite the base."""
    stat = os.fstat(fd)
    extents = list(data_extents(fd))
    if extents == [(0, stat.st_size)] and stat.st_blocks * 512 < stat.st_size:
        raise SnapshotError(
            f"cannot merge {path}: its filesystem does not report holes (SEEK_DATA/SEEK_HOLE), "
            "so the pages the diff holds cannot be told from those it does not; "
            "copy it to ext4, XFS, btrfs or tmpfs first",
            path=str(path),
        )


def merge_diff(
    base_mem: str | os.PathLike[str],
    diff_mem: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> int:
    """Write ``out``: the memory file ``base_mem`` with the pages of ``diff_mem`` on top.

    ``out`` may be ``base_mem`` itself, which is then changed in place (as
    ``rebase-snap`` does); otherwise ``base_mem`` and ``diff_mem`` are only
    read, and ``out`` appears complete or not at all (written to a temporary
    file, then renamed). Returns how many bytes were taken from the diff.

    Raises:
        SnapshotError: the files differ in size (not the same VM), or the
            diff's filesystem cannot report holes.
    """
    base, diff, target = Path(base_mem), Path(diff_mem), Path(out)
    in_place = target.exists() and target.samefile(base)
    with open(diff, "rb") as diff_file:
        diff_fd = diff_file.fileno()
        diff_size = os.fstat(diff_fd).st_size
        base_size = base.stat().st_size
        if diff_size != base_size:
            raise SnapshotError(
                f"cannot merge {diff} ({diff_size} bytes) onto {base} ({base_size} bytes): "
                "a diff and its base have the same size (the guest memory size)",
                path=str(diff),
            )
        _check_holes_are_reported(diff_fd, diff)
        if in_place:
            fd = os.open(base, os.O_WRONLY)
            temporary = None
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            temporary = Path(name)
        try:
            if temporary is not None:
                with open(base, "rb") as base_file:
                    _copy_fd(base_file.fileno(), fd)
                os.fchmod(fd, base.stat().st_mode & 0o777)
            copied = 0
            for start, end in data_extents(diff_fd):
                _copy_range(diff_fd, fd, start, end)
                copied += end - start
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
            raise
        os.close(fd)
    if temporary is not None:
        os.replace(temporary, target)
    return copied
