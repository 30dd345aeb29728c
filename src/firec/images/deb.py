"""Read Debian packages (``.deb``) in Python: no ``dpkg`` needed.

A ``.deb`` is an ``ar`` archive of three members: ``debian-binary`` (the
format version, ``2.0``), ``control.tar.*`` (the package's metadata and
scripts) and ``data.tar.*`` (the files it installs, compressed with xz, gzip,
zstd or bzip2, or not at all). :func:`extract_deb_files` streams
``data.tar.*`` once and copies the regular files a predicate picks.

Example::

    >>> from firec.images.deb import extract_deb_files
    >>> found = extract_deb_files(  # doctest: +SKIP
    ...     "linux-image-6.1.0-28-cloud-amd64_6.1.119-1_amd64.deb",
    ...     lambda name: name.startswith("boot/"),
    ...     "/tmp/kernel",
    ... )
    >>> sorted(found)  # doctest: +SKIP
    ['boot/System.map-6.1.0-28-cloud-amd64', 'boot/config-6.1.0-28-cloud-amd64', ...]
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from firec.errors import FirecError

__all__ = ["ArMember", "ar_members", "extract_deb_files"]

_AR_MAGIC = b"!<arch>\n"
_HEADER = 60
_DATA_NAMES = {
    "data.tar": "",
    "data.tar.gz": "gz",
    "data.tar.xz": "xz",
    "data.tar.bz2": "bz2",
    "data.tar.zst": "zst",
}


@dataclass(frozen=True)
class ArMember:
    """One member of an ``ar`` archive: its name, where its data starts, and its size."""

    name: str
    offset: int
    size: int


def ar_members(path: str | os.PathLike[str]) -> list[ArMember]:
    """The members of the ``ar`` archive at ``path`` (a ``.deb``), in order.

    Raises:
        FirecError: the file is unreadable, not an ``ar`` archive, or truncated.

    Example::

        >>> import pathlib, tempfile
        >>> deb = pathlib.Path(tempfile.mkdtemp()) / "x.deb"
        >>> header = b"debian-binary/".ljust(48) + b"4".ljust(10) + b"`\\n"
        >>> _ = deb.write_bytes(b"!<arch>\\n" + header + b"2.0\\n")
        >>> [(m.name, m.size) for m in ar_members(deb)]
        [('debian-binary', 4)]
    """
    src = Path(path)
    members: list[ArMember] = []
    try:
        with src.open("rb") as f:
            if f.read(len(_AR_MAGIC)) != _AR_MAGIC:
                raise FirecError(f"{src}: not a Debian package (no ar archive header)")
            size_total = os.fstat(f.fileno()).st_size
            pos = len(_AR_MAGIC)
            while pos < size_total:
                f.seek(pos)
                header = f.read(_HEADER)
                if len(header) < _HEADER or header[58:60] != b"`\n":
                    raise FirecError(f"{src}: a corrupt or truncated ar header at byte {pos}")
                name = header[:16].decode("ascii", "replace").strip().rstrip("/")
                try:
                    size = int(header[48:58].decode("ascii").strip())
                except ValueError:
                    raise FirecError(f"{src}: member {name!r} has no valid size") from None
                start = pos + _HEADER
                if start + size > size_total:
                    raise FirecError(f"{src}: member {name!r} is truncated (the file is cut short)")
                members.append(ArMember(name, start, size))
                pos = start + size + (size & 1)  # members are 2-byte aligned
    except OSError as exc:
        raise FirecError(f"{src}: cannot read: {exc.strerror or exc}") from exc
    return members


class _Slice(io.RawIOBase):
    """``size`` bytes of ``f`` from its current position, as a stream."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._left)
        if n == 0:
            return 0
        data = self._f.read(n)
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _data_stream(f: IO[bytes], member: ArMember, kind: str) -> IO[bytes]:
    f.seek(member.offset)
    raw = cast(IO[bytes], io.BufferedReader(_Slice(f, member.size), 1 << 16))
    if kind == "zst":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


def _entries(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    yield from tar


def extract_deb_files(
    deb: str | os.PathLike[str],
    wanted: Callable[[str], bool],
    dest: str | os.PathLike[str],
) -> dict[str, Path]:
    """Copy the regular files of ``deb``'s ``data.tar.*`` that ``wanted`` picks into ``dest``.

    Args:
        deb: the ``.deb`` file.
        wanted: called with each file's path in the package, without a leading
            ``./`` or ``/`` (``"boot/vmlinuz-6.1.0-28-cloud-amd64"``).
        dest: an existing directory; each picked file is written there under its
            base name (the package's directories are not recreated).

    Returns:
        The package path of each file copied, and where it now is.

    Raises:
        FirecError: not a Debian package, no ``data.tar.*`` member, a corrupt
            archive, or two picked files with the same base name.
    """
    src = Path(deb)
    out = Path(dest)
    members = ar_members(src)
    names = [m.name for m in members]
    if not names or names[0] != "debian-binary":
        raise FirecError(f"{src}: not a Debian package (its first member is not debian-binary)")
    data = next((m for m in members if m.name in _DATA_NAMES), None)
    if data is None:
        raise FirecError(f"{src}: a Debian package without a data.tar member ({', '.join(names)})")
    kind = _DATA_NAMES[data.name]
    found: dict[str, Path] = {}
    try:
        with src.open("rb") as f:
            stream = _data_stream(f, data, kind)
            mode = "r|" + (kind if kind in ("gz", "xz", "bz2") else "")
            with tarfile.open(fileobj=stream, mode=mode) as tar:  # type: ignore[call-overload]
                for member in _entries(tar):
                    name = member.name.lstrip("./").lstrip("/")
                    if not member.isfile() or not wanted(name):
                        continue
                    base = Path(name).name
                    if base in {p.name for p in found.values()}:
                        raise FirecError(f"{src}: two picked files are named {base!r}")
                    reader = tar.extractfile(member)
                    assert reader is not None
                    target = out / base
                    with reader, target.open("wb") as copy:
                        shutil.copyfileobj(reader, copy, 1 << 20)
                    found[name] = target
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise FirecError(f"{src}: corrupt {data.name}: {exc}") from exc
    except OSError as exc:
        if exc.errno is None:  # lzma, gzip and zstd errors
            raise FirecError(f"{src}: corrupt {data.name}: {exc}") from exc
        raise FirecError(f"cannot unpack {src} into {out}: {exc.strerror or exc}") from exc
    return found
