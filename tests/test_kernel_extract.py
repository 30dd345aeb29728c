"""extract_vmlinux on synthetic bzImages: one per payload compression, plus the odd cases.

Each fake bzImage has a real boot-protocol setup header, a stand-in for the
decompressor, and a compressed tiny ELF64 x86-64 executable as its payload,
followed by the decompressed size the way the kernel build appends it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import lz4.block  # type: ignore[import-untyped]
import pytest
import zstandard

from firec.errors import FirecError
from firec.images import extract_vmlinux
from firec.images.kernel import COMPRESSIONS

ENTRY = 0x1000000


def tiny_elf(
    *, machine: int = 62, entry: int = ENTRY, paddr: int = ENTRY, extra: bytes = b""
) -> bytes:
    """A minimal ELF64 executable: one PT_LOAD segment holding `cli; hlt`."""
    code = b"\xfa\xf4" * 8
    ehdr = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,  # magic, 64-bit, LE, version, SysV ABI
        2, machine, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0,
    )  # fmt: skip
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 120, paddr, paddr, len(code), len(code), 0x1000)
    return ehdr + phdr + code + extra


def lz4_legacy(data: bytes) -> bytes:
    """The legacy lz4 format (``lz4 -l``): magic, then (u32 size, block) per 8 MiB chunk."""
    out = bytearray(b"\x02\x21\x4c\x18")
    for i in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[i : i + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return bytes(out)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "xz": lambda d: lzma.compress(
        d,
        format=lzma.FORMAT_XZ,
        check=lzma.CHECK_CRC32,
        filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}],
    ),
    "bzip2": bz2.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "lz4": lz4_legacy,
    "zstd": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
}


def bzimage(
    payload: bytes,
    *,
    version: int = 0x020F,
    setup_sects: int = 4,
    stub: bytes = b"\x90" * 3000,
    offset_shift: int = 0,
) -> bytes:
    """A bzImage: setup sectors with the header, then the 'decompressor' and the payload."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x200:0x202] = b"\xeb\x66"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    if version >= 0x0208:
        struct.pack_into("<II", setup, 0x248, len(stub) + offset_shift, len(payload))
    return bytes(setup) + stub + payload + b"\0" * 700


def packed(name: str, vmlinux: bytes) -> bytes:
    return COMPRESSORS[name](vmlinux) + struct.pack("<I", len(vmlinux))


def test_every_advertised_compression_is_tested() -> None:
    assert set(COMPRESSIONS) == set(COMPRESSORS)


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_extracts_each_compression_via_the_setup_header(tmp_path: Path, name: str) -> None:
    vmlinux = tiny_elf(extra=os.urandom(3000) + b"\0" * 50000)  # the relocs the build appends
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed(name, vmlinux)))
    out = extract_vmlinux(src, tmp_path / "vmlinux")
    assert out == tmp_path / "vmlinux"
    assert out.read_bytes() == vmlinux
    assert out.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_falls_back_to_scanning_without_a_modern_header(tmp_path: Path, name: str) -> None:
    vmlinux = tiny_elf(extra=b"\x11" * 1000)
    # boot protocol 2.04 has no payload fields; the stub holds decoy magic numbers
    decoys = b"\x1f\x8b\x08garbage" + b"BZh9nonsense" + b"\x5d\x00\x00junk" + b"\x90" * 100
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed(name, vmlinux), version=0x0204, stub=decoys))
    assert extract_vmlinux(src, tmp_path / "vmlinux").read_bytes() == vmlinux


def test_falls_back_to_scanning_when_the_header_points_wrong(tmp_path: Path) -> None:
    vmlinux = tiny_elf()
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed("gzip", vmlinux), offset_shift=7))
    assert extract_vmlinux(src, tmp_path / "vmlinux").read_bytes() == vmlinux


def test_multi_block_lz4(tmp_path: Path) -> None:
    vmlinux = tiny_elf(extra=os.urandom(1 << 20) + bytes(9 << 20))  # more than one 8 MiB block
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed("lz4", vmlinux)))
    assert extract_vmlinux(src, tmp_path / "vmlinux").read_bytes() == vmlinux


@pytest.mark.needs_tool("lz4")
def test_lz4_legacy_written_by_the_lz4_command(tmp_path: Path) -> None:
    """The kernel build runs `lz4 -l`; decode what that very tool writes."""
    vmlinux = tiny_elf(extra=os.urandom(4096) + bytes(9 << 20))
    compressed = subprocess.run(
        ["lz4", "-l", "-c1", "-"], input=vmlinux, capture_output=True, check=True
    ).stdout
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(compressed + struct.pack("<I", len(vmlinux))))
    assert extract_vmlinux(src, tmp_path / "vmlinux").read_bytes() == vmlinux


def test_writes_into_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed("gzip", tiny_elf())))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert extract_vmlinux(src, out_dir) == out_dir / "vmlinux"


def test_an_elf_vmlinux_is_copied_as_is(tmp_path: Path) -> None:
    src = tmp_path / "vmlinux.in"
    src.write_bytes(tiny_elf())
    assert extract_vmlinux(src, tmp_path / "vmlinux").read_bytes() == tiny_elf()


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FirecError, match=f"{tmp_path}/nope: cannot read"):
        extract_vmlinux(tmp_path / "nope", tmp_path / "vmlinux")


def test_not_a_kernel(tmp_path: Path) -> None:
    src = tmp_path / "random.bin"
    src.write_bytes(os.urandom(64 << 10).replace(b"\x7fELF", b"xxxx"))
    with pytest.raises(FirecError, match=r"random\.bin: not an x86 bzImage"):
        extract_vmlinux(src, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_wrong_architecture_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz-arm"
    src.write_bytes(bzimage(packed("gzip", tiny_elf(machine=183))))
    with pytest.raises(FirecError, match=r"vmlinuz-arm: .*gzip payload .*machine 183, not x86-64"):
        extract_vmlinux(src, tmp_path / "vmlinux")
    elf = tmp_path / "arm.elf"
    elf.write_bytes(tiny_elf(machine=183))
    with pytest.raises(FirecError, match="not a kernel Firecracker boots"):
        extract_vmlinux(elf, tmp_path / "vmlinux")


def test_low_load_address_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed("zstd", tiny_elf(entry=0x1000, paddr=0x1000))))
    with pytest.raises(FirecError, match=r"entry point 0x1000 is below 0x100000"):
        extract_vmlinux(src, tmp_path / "vmlinux")


def test_truncated_payload_is_reported(tmp_path: Path) -> None:
    vmlinux = tiny_elf(extra=os.urandom(20000))
    payload = packed("xz", vmlinux)
    cut = payload[: len(payload) // 2]
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(cut))
    with pytest.raises(
        FirecError, match=r"vmlinuz: no ELF vmlinux could be extracted \(its xz payload"
    ):
        extract_vmlinux(src, tmp_path / "vmlinux")
    assert list(tmp_path.iterdir()) == [src]


def test_size_trailer_mismatch_is_reported(tmp_path: Path) -> None:
    vmlinux = tiny_elf()
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(COMPRESSORS["gzip"](vmlinux) + struct.pack("<I", len(vmlinux) + 1)))
    with pytest.raises(FirecError, match=r"decompressed to .* but the kernel says"):
        extract_vmlinux(src, tmp_path / "vmlinux")


def test_lzo_payload_is_named(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(b"\x89LZO\x00\r\n\x1a\n" + os.urandom(500)))
    with pytest.raises(FirecError, match="LZO-compressed, which firec does not support"):
        extract_vmlinux(src, tmp_path / "vmlinux")


def test_unwritable_destination_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(bzimage(packed("gzip", tiny_elf())))
    with pytest.raises(FirecError, match="cannot write the vmlinux"):
        extract_vmlinux(src, tmp_path / "missing-dir" / "vmlinux")
