"""The host's end of directory transfers: tar streams made and extracted in pieces.

:func:`tar_stream` yields a directory (or one file) as ustar, with pax
headers for long names and huge sizes, in chunks of at most one frame;
:class:`TarExtractor` takes a stream in whatever pieces it arrives and
writes it out. Neither ever holds a whole file. Extraction cannot leave its
directory: names with ``..`` are refused, and every parent is opened with
``O_NOFOLLOW`` relative to the one above, so no symlink is followed. Owners
are not applied, and devices are skipped (the host is not the guest).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from firec.agent.protocol import MAX_FRAME
from firec.errors import AgentError

__all__ = ["TarExtractor", "tar_stream"]

BLOCK = 512
_MAX_OCTAL_SIZE = 0o77777777777
_MAX_EXTENDED = 65536
_FILE_CHUNK = 1 << 20


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size += 1
    return str(size).encode() + body


def _header(name: bytes, st: os.stat_result, kind: bytes, size: int, link: bytes = b"") -> bytes:
    pax = b""
    if len(name) >= 100:
        pax += _pax_record("path", name)
    if len(link) >= 100:
        pax += _pax_record("linkpath", link)
    if size > _MAX_OCTAL_SIZE:
        pax += _pax_record("size", str(size).encode())
    out = b""
    if pax:
        out = _block(b"././@PaxHeader", 0o644, 0, 0, len(pax), int(st.st_mtime), b"x", b"")
        out += pax + b"\0" * (-len(pax) % BLOCK)
    mode = stat.S_IMODE(st.st_mode)
    size_field = 0 if size > _MAX_OCTAL_SIZE else size
    return out + _block(
        name[:99], mode, st.st_uid, st.st_gid, size_field, int(st.st_mtime), kind, link[:99]
    )


def _block(
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, link: bytes
) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(uid & 0o7777777, 8)
    header[116:124] = _octal(gid & 0o7777777, 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(max(mtime, 0), 12)
    header[156:157] = kind
    header[157 : 157 + len(link)] = link
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


class _Packer:
    """Bytes collected into chunks of at most one frame."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def add(self, data: bytes) -> Iterator[bytes]:
        self.buffer += data
        while len(self.buffer) >= MAX_FRAME:
            yield bytes(self.buffer[:MAX_FRAME])
            del self.buffer[:MAX_FRAME]


def _entries(top: Path, top_name: bytes, packer: _Packer) -> Iterator[bytes]:
    """The entries under ``top`` (itself included when it has a name), depth first, without
    recursion (a tree may be deeper than Python's stack)."""
    pending = [(top, top_name)]
    while pending:
        path, name = pending.pop()
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            if name:
                yield from packer.add(_header(name + b"/", st, b"5", 0))
            with os.scandir(path) as listing:
                children = sorted((entry.name for entry in listing), reverse=True)
            for child in children:
                child_name = os.fsencode(child)
                pending.append((path / child, name + b"/" + child_name if name else child_name))
        elif stat.S_ISREG(st.st_mode):
            yield from packer.add(_header(name, st, b"0", st.st_size))
            left = st.st_size
            with open(path, "rb") as source:
                while left > 0:
                    chunk = source.read(min(_FILE_CHUNK, left)) or b"\0" * min(_FILE_CHUNK, left)
                    left -= len(chunk)
                    yield from packer.add(chunk)
            yield from packer.add(b"\0" * (-st.st_size % BLOCK))
        elif stat.S_ISLNK(st.st_mode):
            yield from packer.add(_header(name, st, b"2", 0, os.fsencode(os.readlink(path))))
        elif stat.S_ISFIFO(st.st_mode):
            yield from packer.add(_header(name, st, b"6", 0))
        # sockets and devices stay on the host


def tar_stream(source: str | os.PathLike[str]) -> Iterator[bytes]:
    """``source`` as a tar stream, in chunks of at most one frame.

    A directory gives its contents (names relative to it, the directory
    itself left out); a file gives one entry, its own name.
    """
    path = Path(source)
    packer = _Packer()
    if path.is_dir():
        yield from _entries(path, b"", packer)
    else:
        yield from _entries(path, os.fsencode(path.name), packer)
    yield from packer.add(b"\0" * (2 * BLOCK))
    if packer.buffer:
        yield bytes(packer.buffer)


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big") | ((field[0] & 0x3F) << (8 * (len(field) - 1)))
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


class TarExtractor:
    """A tar stream fed in pieces, written out below ``directory`` (which must exist)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._root = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._header = bytearray()
        self._state = "header"
        self._left = 0
        self._pad = 0
        self._extended = bytearray()
        self._kind = b""
        self._overrides: dict[str, bytes] = {}
        self._out: int | None = None
        self._meta: tuple[int, int] = (0, 0)
        #: The last parent directory and its fd: a directory's entries, or a deep chain,
        #: walk no path.
        self._cached: tuple[tuple[bytes, ...], int] | None = None
        self.entries = 0

    def _fail(self, name: bytes, why: str) -> AgentError:
        where = f"{os.fsdecode(name)!r} into {self.directory}"
        return AgentError("local", f"cannot extract {where}: {why}")

    def feed(self, data: bytes | bytearray) -> None:
        """Take the next piece of the stream."""
        view = memoryview(data)
        while view and self._state != "end":
            if self._state == "header":
                take = BLOCK - len(self._header)
                self._header += view[:take]
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._on_header(block)
            elif self._state in ("data", "skip", "extended"):
                take = min(self._left, len(view))
                if self._state == "data" and self._out is not None:
                    os.write(self._out, view[:take])
                elif self._state == "extended":
                    self._extended += view[:take]
                self._left -= take
                if self._left == 0:
                    self._end_of_data()
            else:  # pad
                take = min(self._pad, len(view))
                self._pad -= take
                if self._pad == 0:
                    self._state = "header"
            view = view[take:]

    def _end_of_data(self) -> None:
        if self._state == "extended":
            self._apply_extended()
        elif self._state == "data" and self._out is not None:
            os.fchmod(self._out, self._meta[0])
            os.utime(self._out, (self._meta[1], self._meta[1]))
            os.close(self._out)
            self._out = None
        self._state = "pad" if self._pad else "header"

    def _apply_extended(self) -> None:
        data = bytes(self._extended)
        if self._kind in (b"L", b"K"):
            self._overrides["path" if self._kind == b"L" else "linkpath"] = data.split(b"\0", 1)[0]
            return
        while data:
            length_text = data.partition(b" ")[0]
            length = int(length_text)
            record, data = data[len(length_text) + 1 : length], data[length:]
            key, _, value = record.rstrip(b"\n").partition(b"=")
            self._overrides[key.decode(errors="replace")] = value

    def _on_header(self, block: bytes) -> None:
        if block == b"\0" * BLOCK:
            self._state = "end"
            return
        checksum = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if checksum != _number(block[148:156]):
            raise self._fail(b"", "not a tar stream (a header's checksum is wrong)")
        kind = block[156:157] or b"0"
        size = int(self._overrides.get("size", b"") or _number(block[124:136]))
        self._left, self._pad = size, -size % BLOCK
        self._state = "skip" if size else ("pad" if self._pad else "header")
        if kind in (b"x", b"L", b"K"):
            if size > _MAX_EXTENDED:
                raise self._fail(b"", "an extended header of more than 64 KiB")
            self._kind, self._extended = kind, bytearray()
            self._state = "extended" if size else "header"
            return
        name = self._overrides.pop("path", None)
        if name is None:
            name = block[:100].split(b"\0", 1)[0]
            if block[257:262] == b"ustar" and block[345]:
                name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        link = self._overrides.pop("linkpath", None) or block[157:257].split(b"\0", 1)[0]
        self._overrides.clear()
        self._meta = (_number(block[100:108]) & 0o7777, _number(block[136:148]))
        if kind == b"g" or kind not in b"01234567\0":
            return
        self._make(name, kind, link, size)

    def _clean(self, name: bytes) -> list[bytes]:
        parts = [p for p in name.split(b"/") if p not in (b"", b".")]
        if b".." in parts:
            raise self._fail(name, "a name with '..' would leave the directory")
        return parts

    def _cache(self, parts: tuple[bytes, ...] | None, fd: int | None) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
        self._cached = None if parts is None or fd is None else (parts, os.dup(fd))

    def _parent(self, parts: list[bytes], name: bytes) -> int:
        if self._cached is not None and self._cached[0] == tuple(parts[:-1]):
            return os.dup(self._cached[1])
        fd = os.dup(self._root)
        try:
            for part in parts[:-1]:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                try:
                    nxt = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except OSError as exc:
            os.close(fd)
            why = f"a parent is a symlink or not a directory ({exc.strerror})"
            raise self._fail(name, why) from None
        if len(parts) > 1:
            self._cache(tuple(parts[:-1]), fd)
        return fd

    def _make(self, name: bytes, kind: bytes, link: bytes, size: int) -> None:
        parts = self._clean(name)
        if not parts:
            return
        parent = self._parent(parts, name)
        base = parts[-1]
        try:
            try:
                old = os.lstat(base, dir_fd=parent)
            except FileNotFoundError:
                old = None
            if old is not None and not (kind == b"5" and stat.S_ISDIR(old.st_mode)):
                self._cache(None, None)  # what is replaced may be the cached directory
                if stat.S_ISDIR(old.st_mode):
                    os.rmdir(base, dir_fd=parent)
                else:
                    os.unlink(base, dir_fd=parent)
            if kind in b"07\0":
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                self._out = os.open(base, flags, 0o600, dir_fd=parent)
                if size:
                    self._state = "data"
                else:
                    self._end_of_data_now()
            elif kind == b"5":
                if old is None:
                    os.mkdir(base, 0o700, dir_fd=parent)
                os.chmod(base, self._meta[0] | 0o700, dir_fd=parent)
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                made = os.open(base, flags, dir_fd=parent)  # what follows is likely inside
                self._cache(tuple(parts), made)
                os.close(made)
            elif kind == b"2":
                os.symlink(link, base, dir_fd=parent)
            elif kind == b"1":
                target = self._clean(link)
                tparent = self._parent(target, link)
                try:
                    os.link(
                        target[-1],
                        base,
                        src_dir_fd=tparent,
                        dst_dir_fd=parent,
                        follow_symlinks=False,
                    )
                finally:
                    os.close(tparent)
            # devices and fifos ('3', '4', '6') are not made on the host
        except OSError as exc:
            raise self._fail(name, exc.strerror or str(exc)) from None
        finally:
            os.close(parent)
        self.entries += 1

    def _end_of_data_now(self) -> None:
        """An empty file: closed at once, with its mode and time."""
        self._state = "data"
        self._end_of_data()

    def close(self) -> None:
        """The stream has ended: check it ended where an archive may, and let go."""
        if self._out is not None:
            os.close(self._out)
            self._out = None
        self._cache(None, None)
        os.close(self._root)
        if self._state not in ("end", "header") or self._header:
            raise self._fail(b"", "the tar stream ended in the middle of an entry")
