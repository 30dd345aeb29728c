"""Snapshot pieces without a VMM: format compatibility, the manifest, sparse merges, UFFD.

The page-fault handler is exercised here against an in-process "Firecracker
side" (a real userfaultfd over anonymous memory, the real socket handshake);
``test_snapshot.py`` runs it with the emulator and real Firecracker.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firec.api.models import SnapshotType
from firec.api.versions import Version
from firec.errors import SnapshotError
from firec.snapshots._format import can_load, incompatibility, probe, written_by
from firec.snapshots._sparse import copy_sparse, data_extents, merge_diff
from firec.snapshots.snapshot import MANIFEST, Snapshot
from firec.snapshots.uffd import (
    GuestRegion,
    UffdError,
    UffdHandler,
    map_anonymous,
    open_userfaultfd,
    receive_handshake,
    register,
    send_handshake,
    unmap,
)

PAGE = 4096


def v(text: str) -> Version:
    return Version.parse(text)


# -- which Firecracker loads which snapshot ------------------------------------------------


@pytest.mark.parametrize(
    ("taken", "fmt", "target", "loads"),
    [
        ("1.14.2", "8.0.0", "1.14.2", True),
        ("1.13.0", "8.0.0", "1.14.4", True),  # same format across minors
        ("1.14.2", "8.0.0", "1.15.0", False),  # 1.15 reads v9
        ("1.15.0", "9.0.0", "1.14.2", False),
        ("1.10.0", "3.0.0", "1.10.1", False),  # a patch release changed the format
        ("1.0.0", "1.0.0", "1.14.2", False),  # versionize era vs serde era
        ("1.14.2", "8.0.0", "1.0.0", False),
        ("1.0.0", "1.0.0", "1.4.0", True),  # 1.4 lists v0.23..v1.4.0
        ("1.4.0", "1.4.0", "1.0.0", False),
        ("1.0.0", "1.0.0", "1.0.0", True),
    ],
)
def test_compatibility_rules(taken: str, fmt: str, target: str, loads: bool) -> None:
    assert can_load(v(taken), v(fmt), v(target)) is loads
    assert (incompatibility(v(taken), v(fmt), v(target)) is None) is loads


def test_format_of_a_release() -> None:
    assert written_by(v("1.14.2")) == v("8.0.0")
    assert written_by(v("1.10.1")) == v("4.0.0")
    assert written_by(v("1.0.0-44-gc73a27cb-dirty")) == v("1.0.0")
    assert written_by(v("1.99.0")) == v("10.0.0")  # newer than known: newest known


def test_a_binary_says_what_it_writes(tmp_path: Path) -> None:
    for version, fmt in (("1.14", "8.0.0"), ("1.0", "1.0.0"), ("1.16", "10.0.0")):
        wrapper = tmp_path / f"fc-{version}"
        wrapper.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m firec.testing.emulator "
            f'--emulate-version {version} "$@"\n'
        )
        wrapper.chmod(0o755)
        info = probe(wrapper)
        assert info.version.minor_key == version
        assert info.snapshot_format == v(fmt)
    real = os.environ.get("FIRECRACKER_BIN")
    if real:
        info = probe(real)
        assert info.snapshot_format == written_by(info.version)


# -- the manifest ----------------------------------------------------------------------------


def _snapshot(directory: Path, **changes: object) -> Snapshot:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmstate").write_bytes(b"state")
    with open(directory / "memory", "wb") as memory:
        memory.truncate(17 << 20)
    fields: dict[str, object] = {
        "directory": directory,
        "state_file": directory / "vmstate",
        "memory_file": directory / "memory",
        "type": SnapshotType.FULL,
        "firecracker_version": v("1.14.2"),
        "snapshot_format": v("8.0.0"),
        "vm_id": "vm-1",
        "vm_config_json": json.dumps(
            {
                "machine-config": {"vcpu_count": 1, "mem_size_mib": 17},
                "boot-source": {"kernel_image_path": "/k.elf", "boot_args": "console=ttyS0"},
                "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            }
        ),
        "host_paths_json": json.dumps({"/k.elf": "/srv/k.elf"}),
    }
    fields.update(changes)
    snap = Snapshot(**fields)  # type: ignore[arg-type]
    snap._save()
    return snap


def test_manifest_round_trip(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "s")
    assert Snapshot.open(tmp_path / "s") == snap
    assert snap.interfaces == {"eth0": "tap0"}
    assert snap.memory_size == 17 << 20
    copy = snap.vm_config
    copy["machine-config"]["mem_size_mib"] = 1  # a copy: the snapshot stays as it was
    assert snap.mem_size_mib == 17
    config = snap.config("new-vm")
    assert config.vm_id == "new-vm"
    assert str(config.kernel_image) == "/srv/k.elf"
    assert config.kernel_args == "console=ttyS0"
    assert [i.host_dev_name for i in config.network_interfaces] == ["tap0"]
    with pytest.raises(AttributeError):
        snap.vm_id = "other"  # type: ignore[misc]


def test_the_config_of_a_snapshot_is_built_by_the_vm_room(tmp_path: Path) -> None:
    """Config.from_snapshot builds it; Snapshot.config() asks it, once firec.vm is imported."""
    from firec.vm.config import Config

    snap = _snapshot(tmp_path / "s")
    assert Config.from_snapshot(snap, "new-vm") == snap.config("new-vm")
    code = (
        "import sys\n"
        "from firec.errors import SnapshotError\n"
        "from firec.snapshots import Snapshot\n"
        f"snap = Snapshot.open({str(tmp_path / 's')!r})\n"
        "try:\n"
        "    snap.config('x')\n"
        "except SnapshotError as exc:\n"
        "    print(exc)\n"
        "assert 'firec.vm' not in sys.modules, sorted(sys.modules)\n"
        "import firec\n"
        "config = firec.Config.from_snapshot(snap, 'x')  # imports firec.vm\n"
        "assert snap.config('x') == config\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "firec.Config.from_snapshot(snapshot)" in result.stdout


def test_firec_snapshot_builds_its_config_with_nothing_else_imported(tmp_path: Path) -> None:
    """The documented way, ``firec.Snapshot.open(d).config()``, works in a fresh process."""
    _snapshot(tmp_path / "s")
    code = (
        "import firec\n"
        f"config = firec.Snapshot.open({str(tmp_path / 's')!r}).config('x')\n"
        "print(type(config).__name__, config.vm_id)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Config", "x"]


def test_opening_what_is_not_a_snapshot(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"snapshot\.json is missing"):
        Snapshot.open(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(SnapshotError, match="cannot read"):
        Snapshot.open(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"manifest_version": 1, "type": "Full"}))
    with pytest.raises(SnapshotError, match="not a firec snapshot manifest"):
        Snapshot.open(tmp_path)


def test_a_manifest_of_a_newer_firec_is_refused_naming_both_versions(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"manifest_version": 2, "type": "Full"}))
    with pytest.raises(
        SnapshotError, match=r"snapshot\.json.*manifest_version 2.*manifest_version 1"
    ):
        Snapshot.open(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"manifest_version": 0, "type": "Full"}))
    with pytest.raises(SnapshotError, match=r"manifest_version 0.*does not read"):
        Snapshot.open(tmp_path)


def test_refusal_names_both_versions(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "s", firecracker_version=v("1.0.0"), snapshot_format=v("1.0.0"))
    assert not snap.compatible_with("1.14.2")
    assert snap.compatible_with("1.0.0")
    with pytest.raises(SnapshotError) as caught:
        snap.check_compatible("1.14.2")
    assert "1.0.0" in str(caught.value) and "1.14.2" in str(caught.value)
    assert (caught.value.snapshot_version, caught.value.target_version) == ("1.0.0", "1.14.2")


def test_file_checks(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path / "s")
    snap.check_files()
    os.truncate(snap.memory_file, 16 << 20)
    with pytest.raises(SnapshotError, match=str(16 << 20)):
        snap.check_files()
    snap.check_files(memory=False)
    snap.state_file.unlink()
    with pytest.raises(SnapshotError, match="state file"):
        snap.check_files(memory=False)


def test_diff_chain_needs_its_parent(tmp_path: Path) -> None:
    base = _snapshot(tmp_path / "base")
    diff = _snapshot(tmp_path / "diff", type=SnapshotType.DIFF, parent=base.directory)
    assert Snapshot.open(diff.directory).parent == base.directory
    assert [s.directory for s in diff.chain()] == [base.directory, diff.directory]
    orphan = _snapshot(tmp_path / "orphan", type=SnapshotType.DIFF)
    with pytest.raises(SnapshotError, match="names no parent"):
        orphan.chain()


# -- sparse files ----------------------------------------------------------------------------


def _sparse(path: Path, size: int, pages: dict[int, bytes]) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for index, data in pages.items():
            handle.seek(index * PAGE)
            handle.write(data.ljust(PAGE, b"\0"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_extents_find_only_written_pages(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    _sparse(path, 64 * PAGE, {3: b"a", 4: b"b", 40: b"c"})
    with open(path, "rb") as handle:
        assert list(data_extents(handle.fileno())) == [(3 * PAGE, 5 * PAGE), (40 * PAGE, 41 * PAGE)]
    empty = tmp_path / "empty"
    _sparse(empty, 8 * PAGE, {})
    with open(empty, "rb") as handle:
        assert list(data_extents(handle.fileno())) == []


def test_copy_sparse_keeps_holes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _sparse(source, 1024 * PAGE, {0: b"head", 700: b"middle"})
    copy_sparse(source, tmp_path / "copy")
    assert _digest(tmp_path / "copy") == _digest(source)
    assert (tmp_path / "copy").stat().st_blocks * 512 <= 16 * PAGE
    with pytest.raises(FileExistsError):
        copy_sparse(source, tmp_path / "copy")


def test_merge_diff_overlays_the_diff_pages(tmp_path: Path) -> None:
    base, diff, out = tmp_path / "base", tmp_path / "diff", tmp_path / "out"
    base.write_bytes(b"".join(bytes([i]) * PAGE for i in range(32)))  # dense, page i = i
    _sparse(diff, 32 * PAGE, {2: b"two", 3: b"\0", 30: b"thirty"})  # a zeroed page is data too
    base_before, diff_before = _digest(base), _digest(diff)
    copied = merge_diff(base, diff, out)
    assert copied == 3 * PAGE
    merged = out.read_bytes()
    for page in range(32):
        chunk = merged[page * PAGE : (page + 1) * PAGE]
        if page == 2:
            assert chunk == b"two".ljust(PAGE, b"\0")
        elif page == 3:
            assert chunk == b"\0" * PAGE
        elif page == 30:
            assert chunk == b"thirty".ljust(PAGE, b"\0")
        else:
            assert chunk == bytes([page]) * PAGE
    assert (_digest(base), _digest(diff)) == (base_before, diff_before)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_merge_diff_in_place_and_chains(tmp_path: Path) -> None:
    base, one, two = tmp_path / "base", tmp_path / "one", tmp_path / "two"
    _sparse(base, 16 * PAGE, {0: b"base0", 5: b"base5"})
    _sparse(one, 16 * PAGE, {5: b"one5"})
    _sparse(two, 16 * PAGE, {5: b"two5", 9: b"two9"})
    merge_diff(base, one, base)
    merge_diff(base, two, base)
    data = base.read_bytes()
    assert data[:5] == b"base0"
    assert data[5 * PAGE : 5 * PAGE + 4] == b"two5"
    assert data[9 * PAGE : 9 * PAGE + 4] == b"two9"
    assert base.stat().st_blocks * 512 <= 8 * PAGE  # still sparse


def test_merge_diff_refuses_another_vms_diff(tmp_path: Path) -> None:
    base, diff = tmp_path / "base", tmp_path / "diff"
    _sparse(base, 16 * PAGE, {0: b"x"})
    _sparse(diff, 32 * PAGE, {1: b"y"})
    with pytest.raises(SnapshotError, match="same size"):
        merge_diff(base, diff, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the page-fault handler --------------------------------------------------------------------


def _memory_file(path: Path, pages: int) -> bytes:
    content = b"".join(struct.pack("<I", i) * (PAGE // 4) for i in range(pages))
    path.write_bytes(content)
    return content


def _read_in_thread(address: int, length: int, timeout: float = 10.0) -> bytes:
    """Read guest memory; a missing page blocks until the handler serves it."""
    result: list[bytes] = []

    def read() -> None:
        buffer = ctypes.create_string_buffer(length)
        ctypes.memmove(buffer, address, length)  # without the GIL: the handler needs it
        result.append(buffer.raw)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert result, "the page fault was not served"
    return result[0]


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


def test_handler_serves_pages_from_the_memory_file(tmp_path: Path) -> None:
    pages = 64
    content = _memory_file(tmp_path / "memory", pages)
    size = pages * PAGE
    uffd = open_userfaultfd()
    address = map_anonymous(size)
    try:
        register(uffd, address, size)
        with UffdHandler(tmp_path / "uffd.sock", tmp_path / "memory") as handler:
            conn = send_handshake(tmp_path / "uffd.sock", [GuestRegion(address, size, 0)], uffd)
            assert handler.wait_connected(5)
            assert handler.peer_pid == os.getpid()
            assert handler.regions == [GuestRegion(address, size, 0, PAGE)]
            assert _read_in_thread(address + 7 * PAGE, 8) == content[7 * PAGE : 7 * PAGE + 8]
            last = (pages - 1) * PAGE
            assert _read_in_thread(address + last, PAGE) == content[last:]
            assert _read_in_thread(address + 7 * PAGE + 100, 4) == content[7 * PAGE + 100 :][:4]
            # the counter moves just after the page is in place: give it a moment
            _wait_for(lambda: handler.pages_served >= 2)
            assert handler.pages_served == 2  # the third read hit a page already there
            # the balloon gives a page back: it comes back as zeros, not from the file
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.madvise(ctypes.c_void_p(address + 3 * PAGE), PAGE, 4) == 0  # DONTNEED
            _wait_for(lambda: bool(handler._removed))
            assert _read_in_thread(address + 3 * PAGE, PAGE) == b"\0" * PAGE
            _wait_for(lambda: handler.zero_pages >= 1)
            assert handler.zero_pages == 1
            assert handler.error is None
            conn.close()
        assert not (tmp_path / "uffd.sock").exists()
    finally:
        unmap(address, size)
        os.close(uffd)


def test_one_handler_serves_many_guests(tmp_path: Path) -> None:
    pages = 16
    content = _memory_file(tmp_path / "memory", pages)
    size = pages * PAGE
    guests = []  # (userfaultfd, address) of each "Firecracker"
    try:
        with UffdHandler(tmp_path / "uffd.sock", tmp_path / "memory", clients=None) as handler:
            conns = []
            for _ in range(3):
                uffd, address = open_userfaultfd(), map_anonymous(size)
                guests.append((uffd, address))
                register(uffd, address, size)
                region = [GuestRegion(address, size, 0)]
                conns.append(send_handshake(tmp_path / "uffd.sock", region, uffd))
            _wait_for(lambda: handler.peers_served == 3)
            assert handler.peers_served == 3
            for number, (_, address) in enumerate(guests):  # each its own copy of the page
                page = number + 5
                got = _read_in_thread(address + page * PAGE, 8)
                assert got == content[page * PAGE : page * PAGE + 8]
            _wait_for(lambda: handler.pages_served >= 3)
            assert handler.pages_served == 3 and handler.error is None
            for conn in conns:
                conn.close()
        assert not (tmp_path / "uffd.sock").exists()
    finally:
        for uffd, address in guests:
            unmap(address, size)
            os.close(uffd)
    with pytest.raises(ValueError, match="at least 1"):
        UffdHandler(tmp_path / "other.sock", tmp_path / "memory", clients=0)


def test_handler_reads_every_handshake_shape(tmp_path: Path) -> None:
    shapes = [
        {"base_host_virt_addr": 4096, "size": 8192, "offset": 0},  # 1.1
        {"base_host_virt_addr": 4096, "size": 8192, "offset": 0, "page_size_kib": 4096},  # 1.7
        {"base_host_virt_addr": 4096, "size": 8192, "offset": 0, "page_size": 2 << 20},  # 1.14
    ]
    assert [GuestRegion.from_json(s).page_size for s in shapes] == [4096, 4096, 2 << 20]
    left, right = socket.socketpair()
    with left, right:
        rfd, wfd = os.pipe()
        body = json.dumps([shapes[2], {**shapes[0], "offset": 8192}]).encode()
        right.sendmsg([body[:10]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", rfd))])
        right.sendall(body[10:])  # the JSON may arrive in pieces
        regions, fd = receive_handshake(left, 2.0)
        os.close(fd)
        os.close(rfd)
        os.close(wfd)
    assert [r.offset for r in regions] == [0, 8192]


def test_handshake_without_a_descriptor_or_json_is_refused() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b'[{"base_host_virt_addr": 1, "size": 2, "offset": 0}]')
        with pytest.raises(UffdError, match="no userfaultfd"):
            receive_handshake(left, 1.0)
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"[{")
        with pytest.raises(UffdError, match="no handshake"):
            receive_handshake(left, 0.2)


def test_handler_gives_up_when_firecracker_never_connects(tmp_path: Path) -> None:
    _memory_file(tmp_path / "memory", 1)
    handler = UffdHandler(tmp_path / "uffd.sock", tmp_path / "memory", connect_timeout=0.2)
    handler.start()
    assert not handler.wait_connected(2.0)
    assert handler._thread is not None
    handler._thread.join(2.0)
    assert isinstance(handler.error, UffdError)
    assert "did not connect" in str(handler.error)
    handler.close()
    handler.close()  # twice is fine
    assert not (tmp_path / "uffd.sock").exists()


def test_the_module_example_runs(tmp_path: Path) -> None:
    import subprocess
    import textwrap

    import firec.snapshots.snapshot

    doc = firec.snapshots.snapshot.__doc__ or ""
    block = doc.split("Firecracker and a kernel)::\n", 1)[1].split("\nRestoring never", 1)[0]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("FIRECRACKER_BIN", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(block)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Running"
