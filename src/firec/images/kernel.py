"""Turn a distribution kernel (bzImage) into the ELF ``vmlinux`` Firecracker boots on x86-64.

Firecracker on x86-64 loads an uncompressed ELF kernel, while distributions ship
a compressed ``bzImage`` (``/boot/vmlinuz-*``). A bzImage is a real-mode setup
stub, followed by the protected-mode decompressor, which carries the compressed
ELF ``vmlinux`` as its payload. :func:`extract_vmlinux` finds that payload
through the boot protocol's setup header (``payload_offset`` and
``payload_length``, boot protocol 2.08 and newer), decompresses it (gzip, xz,
zstd, lz4, bzip2 or lzma) and checks that the result is an ELF64 x86-64
executable that Firecracker can load. When the header is missing or odd, it
falls back to scanning the file for the compressors' magic numbers, the way
the kernel's own ``scripts/extract-vmlinux`` does.

Example::

    >>> from firec.images import extract_vmlinux
    >>> vmlinux = extract_vmlinux("/boot/vmlinuz-6.1.0-28-cloud-amd64", "vmlinux")  # doctest: +SKIP
    >>> vmlinux.read_bytes()[:4]  # doctest: +SKIP
    b'\\x7fELF'
"""

from __future__ import annotations

import bz2
import contextlib
import io
import logging
import lzma
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from firec.errors import FirecError

__all__ = ["COMPRESSIONS", "extract_vmlinux"]

log = logging.getLogger(__name__)

#: Largest vmlinux we agree to produce: a guard against decompression bombs.
MAX_VMLINUX_SIZE = 1 << 30

# Boot protocol setup header (Documentation/arch/x86/boot.rst), offsets in the file.
_SETUP_SECTS = 0x1F1
_BOOT_FLAG = 0x1FE
_HEADER_MAGIC = 0x202
_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248
_PAYLOAD_LENGTH = 0x24C
_HEADER_END = 0x250

_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20

#: Magic numbers of the payload compressions, in the order ``extract-vmlinux`` tries them.
_MAGICS: tuple[tuple[str, bytes], ...] = (
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),
    ("lz4", _LZ4_LEGACY_MAGIC),
    ("zstd", b"\x28\xb5\x2f\xfd"),
)
_LZO_MAGIC = b"\x89LZO"

#: The payload compressions :func:`extract_vmlinux` understands.
COMPRESSIONS: tuple[str, ...] = tuple(name for name, _ in _MAGICS)

# ELF constants.
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_EXEC = 2
_EM_X86_64 = 62
_PT_LOAD = 1
_HIMEM_START = 0x100000  # Firecracker refuses an ELF loaded or entered below 1 MiB.


class _NotThisFormat(Exception):
    """A candidate payload did not decompress (internal)."""


def extract_vmlinux(bzimage: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract the ELF ``vmlinux`` from a bzImage and write it to ``dest``.

    Args:
        bzimage: a compressed x86 kernel (``/boot/vmlinuz-*``, an ``arch/x86/boot/bzImage``).
            An ELF vmlinux is accepted too, checked and copied as it is.
        dest: the file to write; when it is an existing directory, ``vmlinux`` inside it.
            It is written atomically: it either appears whole or not at all.

    Returns:
        The path of the ELF vmlinux written.

    Raises:
        FirecError: the file is missing or unreadable, no payload could be
            decompressed, or the result is not an ELF64 x86-64 executable
            Firecracker can load; the message names the file and the problem.

    Example::

        >>> path = extract_vmlinux("vmlinuz-6.1.0-28-cloud-amd64", "/tmp/")  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'vmlinux'
    """
    src = Path(bzimage)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise FirecError(f"{src}: cannot read the kernel image: {exc.strerror or exc}") from exc
    vmlinux = _vmlinux_from(data, src)
    out = Path(dest)
    if out.is_dir():
        out = out / "vmlinux"
    _write_atomically(out, vmlinux)
    return out


def _vmlinux_from(data: bytes, src: Path) -> bytes:
    if data[:4] == b"\x7fELF":
        problem = _elf_problem(data)
        if problem:
            raise FirecError(f"{src}: an ELF file, but not a kernel Firecracker boots: {problem}")
        return data
    header_error = ""
    payload = _payload_from_header(data)
    if payload is None:
        header_error = "no boot protocol 2.08+ setup header"
    else:
        name = _compression_of(payload)
        if name is None:
            header_error = f"the payload starts with {payload[:6].hex(' ')}, no known compression"
            if payload.startswith(_LZO_MAGIC):
                header_error = "the payload is LZO-compressed, which firec does not support"
        else:
            try:
                vmlinux = _decompress(name, payload)
            except _NotThisFormat as exc:
                header_error = f"its {name} payload does not decompress: {exc}"
            else:
                problem = _elf_problem(vmlinux)
                if not problem:
                    _check_size_trailer(payload, vmlinux, src, name)
                    log.debug("%s: %s payload per the setup header", src, name)
                    return vmlinux
                header_error = f"its {name} payload is not a bootable ELF: {problem}"
    log.debug("%s: %s; scanning for compressed data", src, header_error)
    found = _scan(data)
    if found is not None:
        name, offset, vmlinux = found
        log.debug("%s: %s payload found at offset %d by scanning", src, name, offset)
        return vmlinux
    if data[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS":
        raise FirecError(
            f"{src}: not an x86 bzImage (no 'HdrS' setup header) and no compressed "
            f"ELF kernel found inside; supported payloads: {', '.join(COMPRESSIONS)}"
        )
    raise FirecError(
        f"{src}: no ELF vmlinux could be extracted ({header_error}; scanning for "
        f"{', '.join(COMPRESSIONS)} data found nothing usable either)"
    )


def _payload_from_header(data: bytes) -> bytes | None:
    """The compressed payload as the setup header locates it, or None when it cannot."""
    if len(data) < _HEADER_END:
        return None
    if data[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS" or data[_BOOT_FLAG : _BOOT_FLAG + 2] != (
        b"\x55\xaa"
    ):
        return None
    (version,) = struct.unpack_from("<H", data, _VERSION)
    if version < 0x0208:
        return None
    setup_sects = data[_SETUP_SECTS] or 4
    start = (setup_sects + 1) * 512
    offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    begin = start + offset
    if length == 0 or begin + length > len(data):
        return None
    return data[begin : begin + length]


def _compression_of(payload: bytes) -> str | None:
    for name, magic in _MAGICS:
        if payload.startswith(magic):
            return name
    return None


def _check_size_trailer(payload: bytes, vmlinux: bytes, src: Path, name: str) -> None:
    # The kernel build appends the decompressed size as a little-endian u32.
    (expected,) = struct.unpack("<I", payload[-4:])
    if expected != len(vmlinux):
        raise FirecError(
            f"{src}: the {name} payload decompressed to {len(vmlinux)} bytes but the "
            f"kernel says {expected}; the image looks truncated or corrupt"
        )


def _scan(data: bytes) -> tuple[str, int, bytes] | None:
    """Try every magic number occurrence in file order; first bootable ELF wins."""
    candidates: list[tuple[int, str]] = []
    for name, magic in _MAGICS:
        pos = data.find(magic)
        while pos != -1 and len(candidates) < 4096:
            candidates.append((pos, name))
            pos = data.find(magic, pos + 1)
    for pos, name in sorted(candidates)[:256]:
        try:
            vmlinux = _decompress(name, data[pos:])
        except _NotThisFormat:
            continue
        if not _elf_problem(vmlinux):
            return name, pos, vmlinux
    return None


def _decompress(name: str, payload: bytes) -> bytes:
    try:
        return _DECODERS[name](payload)
    except _NotThisFormat:
        raise
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, RuntimeError) as exc:
        raise _NotThisFormat(str(exc) or type(exc).__name__) from exc


def _too_big() -> _NotThisFormat:
    return _NotThisFormat(f"decompresses to more than {MAX_VMLINUX_SIZE} bytes")


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


def _whole(dec: _Decompressor, payload: bytes, stream: str) -> bytes:
    """``payload`` through ``dec``: refused if larger than a vmlinux may be, or cut short."""
    out = dec.decompress(payload, MAX_VMLINUX_SIZE + 1)
    if len(out) > MAX_VMLINUX_SIZE:
        raise _too_big()
    if not dec.eof:
        raise _NotThisFormat(f"{stream} is truncated")
    return out


def _gunzip(payload: bytes) -> bytes:
    return _whole(zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), payload, "gzip stream")


def _bunzip2(payload: bytes) -> bytes:
    return _whole(bz2.BZ2Decompressor(), payload, "bzip2 stream")


def _lzma_with(fmt: int) -> Callable[[bytes], bytes]:
    def decode(payload: bytes) -> bytes:
        return _whole(lzma.LZMADecompressor(format=fmt), payload, "stream")

    return decode


def _unzstd(payload: bytes) -> bytes:
    import zstandard

    # The kernel compresses with `zstd -22 --ultra`: allow its large windows.
    dec = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    try:
        with dec.stream_reader(io.BytesIO(payload)) as reader:
            out = reader.read(MAX_VMLINUX_SIZE + 1)
    except zstandard.ZstdError as exc:
        raise _NotThisFormat(str(exc)) from exc
    if len(out) > MAX_VMLINUX_SIZE:
        raise _too_big()
    if not out:
        raise _NotThisFormat("zstd frame is empty or truncated")
    return out


def _unlz4_legacy(payload: bytes) -> bytes:
    """Decode the legacy lz4 format (``lz4 -l``) the kernel build uses.

    A magic number, then blocks, each a little-endian u32 compressed size and
    at most 8 MiB once decompressed; the stream simply ends (the kernel build
    then appends its own 4-byte size, which is no block and is ignored here).
    """
    import lz4.block  # type: ignore[import-untyped]

    if not payload.startswith(_LZ4_LEGACY_MAGIC):
        raise _NotThisFormat("no lz4 legacy magic")
    out = bytearray()
    pos = 4
    while pos + 4 <= len(payload):
        (size,) = struct.unpack_from("<I", payload, pos)
        if size == int.from_bytes(_LZ4_LEGACY_MAGIC, "little"):
            pos += 4  # concatenated streams repeat the magic
            continue
        if size == 0 or pos + 4 + size > len(payload):
            break  # the appended size trailer, or the end
        try:
            block: bytes = lz4.block.decompress(
                payload[pos + 4 : pos + 4 + size], uncompressed_size=_LZ4_LEGACY_BLOCK
            )
        except lz4.block.LZ4BlockError as exc:
            if not out:
                raise _NotThisFormat(str(exc)) from exc
            break  # what follows the last block happened to look like a size
        out += block
        if len(out) > MAX_VMLINUX_SIZE:
            raise _too_big()
        pos += 4 + size
    if not out:
        raise _NotThisFormat("no lz4 block")
    return bytes(out)


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gunzip,
    "xz": _lzma_with(lzma.FORMAT_XZ),
    "bzip2": _bunzip2,
    "lzma": _lzma_with(lzma.FORMAT_ALONE),
    "lz4": _unlz4_legacy,
    "zstd": _unzstd,
}


def _elf_problem(data: bytes) -> str:
    """Why ``data`` is not an ELF64 x86-64 executable Firecracker loads ("" when it is)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return "no ELF magic"
    if data[4] != _ELFCLASS64:
        return "not a 64-bit ELF"
    if data[5] != _ELFDATA2LSB:
        return "not little-endian"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != _EM_X86_64:
        return f"built for ELF machine {e_machine}, not x86-64 ({_EM_X86_64})"
    if e_type != _ET_EXEC:
        return f"ELF type {e_type}, not an executable ({_ET_EXEC})"
    (e_entry, e_phoff) = struct.unpack_from("<QQ", data, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    if e_phnum == 0 or e_phentsize < 56 or e_phoff + e_phnum * e_phentsize > len(data):
        return "no program headers or a truncated program header table"
    if e_entry < _HIMEM_START:
        return f"entry point {e_entry:#x} is below {_HIMEM_START:#x}"
    loads = 0
    for i in range(e_phnum):
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type != _PT_LOAD or p_filesz == 0:
            continue
        loads += 1
        if p_offset + p_filesz > len(data):
            return f"segment {i} runs past the end of the file (truncated?)"
        if p_paddr < _HIMEM_START:
            return f"segment {i} loads at {p_paddr:#x}, below {_HIMEM_START:#x}"
    if not loads:
        return "no loadable segment"
    return ""


def _write_atomically(dest: Path, data: bytes) -> None:
    parent = dest.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise FirecError(f"{dest}: cannot write the vmlinux: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FirecError(f"{dest}: cannot write the vmlinux: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
