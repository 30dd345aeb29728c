"""Snapshots, restores and clones of the tiny guest, on the emulator and on real Firecracker.

Run against a real Firecracker with ``FIRECRACKER_BIN=/opt/fc/firecracker-v1.14.2``
(or v1.0.0; the jailed test also needs ``JAILER_BIN``). Every test checks
that nothing is left behind and that the snapshot's files are never written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
from firec.api import models
from firec.api.models import SnapshotType
from firec.api.versions import Version
from firec.errors import ConfigError, MachineError, SnapshotError, UnsupportedError
from firec.snapshots._sparse import data_extents
from firec.snapshots.snapshot import MANIFEST, Snapshot
from firec.snapshots.uffd import UffdHandler
from firec.testing.guest import BOOT_LINE
from firec.vm.config import Config
from firec.vm.state import MachineState
from tests import host_tools
from tests.support import (
    assert_nothing_left,
    binary_version,
    console_text,
    emulator_wrapper,
    guest_builder,
    in_jail,
)

MEM_MIB = 32


@pytest.fixture
def version(vmm_binary: Path) -> Version:
    """The release of the backend's Firecracker."""
    return binary_version(vmm_binary)


def _builder(vm_id: str | None, binary: Path, kernel: Path, tmp: Path) -> firec.Builder:
    return guest_builder(vm_id, binary, kernel, tmp, MEM_MIB).kernel_args("console=ttyS0")


@pytest.fixture
def builder(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> firec.Builder:
    return _builder(None, vmm_binary, guest_kernel, short_tmp)


def fingerprint(snapshot: Snapshot) -> dict[str, tuple[str, int, int, int, int]]:
    """Content hash, mtime, owner, mode and link count of the snapshot's files."""
    result = {}
    for path in (*snapshot.files, snapshot.directory / MANIFEST):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        result[path.name] = (digest, stat.st_mtime_ns, stat.st_uid, stat.st_mode, stat.st_nlink)
    return result


def take(builder: firec.Builder, directory: Path, **config: object) -> Snapshot:
    """Boot the guest, snapshot it into ``directory``, and stop it."""
    with firec.Machine.create(builder.build().replace(**config)) as machine:
        machine.start()
        assert BOOT_LINE in console_text(machine, BOOT_LINE)
        snap = machine.snapshot(directory)
        assert machine.state() is MachineState.PAUSED
        launch = machine.launch
    assert_nothing_left(launch, machine.pid)
    return snap


def _comparable(vm_config: dict[str, object]) -> dict[str, object]:
    machine = dict(vm_config["machine-config"])  # type: ignore[call-overload]
    machine.pop("track_dirty_pages", None)  # set by the load, not by the snapshot
    return {"machine-config": machine, "boot-source": vm_config.get("boot-source")}


# -- snapshot, kill, restore -------------------------------------------------------------


def test_snapshot_kill_restore_runs_again(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    config = builder.build()
    with firec.Machine.create(config) as machine:
        machine.start()
        snap = machine.snapshot(short_tmp / "snap", resume=True)
        assert machine.state() is MachineState.RUNNING
        pid = machine.pid
    assert_nothing_left(machine.launch, pid)  # the original is gone

    assert snap.type is SnapshotType.FULL
    assert snap.firecracker_version == version
    assert snap.memory_file.stat().st_size == MEM_MIB << 20
    assert snap.mem_size_mib == MEM_MIB
    reopened = Snapshot.open(short_tmp / "snap")
    assert reopened == snap
    before = fingerprint(snap)

    restored_config = config.replace(vm_id="restored-1")
    with firec.Machine.restore(reopened, restored_config) as restored:
        assert restored.pid != pid
        assert restored.state() is MachineState.RUNNING
        exported = restored.client.get_vm_config().to_api()
        if version >= Version(1, 1, 0):  # 1.0 forgets the restored VM's configuration
            assert _comparable(exported) == _comparable(snap.vm_config)
        restored.pause()
        restored.resume()
        assert restored.state() is MachineState.RUNNING
        launch = restored.launch
    assert_nothing_left(launch, restored.pid)
    assert fingerprint(snap) == before


def test_restore_without_resume_stays_paused(builder: firec.Builder, short_tmp: Path) -> None:
    snap = take(builder, short_tmp / "snap")
    with firec.Machine.restore(snap, builder.build(), resume=False) as restored:
        assert restored.state() is MachineState.PAUSED
        restored.resume()
        assert restored.state() is MachineState.RUNNING


async def test_async_restore_from_a_derived_config(builder: firec.Builder, short_tmp: Path) -> None:
    snap = take(builder, short_tmp / "snap", workdir=None)
    derived = snap.config()
    assert derived.vm_id != snap.vm_id
    assert derived.machine.mem_size_mib == MEM_MIB
    assert derived.firecracker_binary == snap.firecracker_binary
    machine = await firec.AsyncMachine.restore(snap)
    async with machine:
        assert await machine.state() is MachineState.RUNNING
        assert machine.vm_id != snap.vm_id
    assert_nothing_left(machine.launch, machine.pid)


def test_snapshot_of_a_restored_vm_restores_too(builder: firec.Builder, short_tmp: Path) -> None:
    first = take(builder, short_tmp / "first")
    with firec.Machine.restore(first, builder.build()) as restored:
        second = restored.snapshot(short_tmp / "second")
    assert second.mem_size_mib == MEM_MIB
    assert second.kernel_image == first.kernel_image
    with firec.Machine.restore(second, builder.build()) as again:
        assert again.state() is MachineState.RUNNING


# -- clones ------------------------------------------------------------------------------


async def test_ten_clones_share_the_memory_file(builder: firec.Builder, short_tmp: Path) -> None:
    snap = take(builder, short_tmp / "snap")
    before = fingerprint(snap)
    started = time.monotonic()
    clones = await firec.AsyncMachine.clone(snap, 10, builder.build().replace(vm_id="clone"))
    elapsed = time.monotonic() - started
    try:
        assert len(clones) == 10
        assert sorted(c.vm_id for c in clones) == sorted(f"clone-{i}" for i in range(10))
        assert len({c.pid for c in clones}) == 10
        assert len({c.socket_path for c in clones}) == 10
        states = await asyncio.gather(*(c.state() for c in clones))
        assert set(states) == {MachineState.RUNNING}
        # one memory file, mapped by every clone: never copied
        assert snap.memory_file.stat().st_nlink == 1
        for clone in clones:
            assert clone.pid is not None
            maps = Path(f"/proc/{clone.pid}/maps").read_text()
            if "emulator" not in str(snap.firecracker_binary):
                assert str(snap.memory_file) in maps
    finally:
        await asyncio.gather(*(c.delete() for c in clones))
    for clone in clones:
        assert_nothing_left(clone.launch, clone.pid)
    assert fingerprint(snap) == before
    print(f"10 clones started in {elapsed * 1000:.0f} ms")


def test_sync_clone(builder: firec.Builder, short_tmp: Path) -> None:
    snap = take(builder, short_tmp / "snap")
    clones = firec.Machine.clone(snap, 3, builder.build().replace(vm_id="sync"))
    try:
        assert [c.state() for c in clones] == [MachineState.RUNNING] * 3
        assert all(isinstance(c, firec.Machine) for c in clones)
    finally:
        for clone in clones:
            clone.delete()
    for clone in clones:
        assert_nothing_left(clone.launch, clone.pid)


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


async def test_clone_failing_halfway_tears_down_the_others(
    builder: firec.Builder, vmm_binary: Path, short_tmp: Path
) -> None:
    snap = take(builder, short_tmp / "snap")
    broken = short_tmp / "broken-firecracker"
    broken.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version|--snapshot-version) exec {vmm_binary} "$@";; esac\n'
        "sleep 0.3\necho 'Error: the broken clone gives up' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    configs: list[Config] = []

    def configure(i: int, config: Config) -> Config:
        if i == 5:
            config = config.replace(firecracker_binary=broken)
        configs.append(config)
        return config

    with pytest.raises(MachineError) as caught:
        await firec.AsyncMachine.clone(
            snap, 8, builder.build().replace(vm_id="half"), configure=configure
        )
    assert "half-5" in str(caught.value)
    assert "1 of 8 clones failed" in " ".join(caught.value.__notes__)
    assert len(configs) == 8
    for config in configs:
        assert not config.vm_dir.exists(), config.vm_dir
        assert not config.host_socket_path.exists()
        assert _processes_with(f"--id {config.vm_id} ") == []


# -- refusals before spawning ------------------------------------------------------------


def _copy_snapshot(snap: Snapshot, directory: Path) -> Path:
    shutil.copytree(snap.directory, directory)
    return directory


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_incompatible_version_is_refused_naming_both(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    snap = take(builder, short_tmp / "snap")
    other = _copy_snapshot(snap, short_tmp / "other")
    if version >= Version(1, 7, 0):
        claimed, claimed_format = "1.0.0", "1.0.0"  # a versionize-era snapshot
    else:
        claimed, claimed_format = "1.14.2", "8.0.0"
    _edit_manifest(other, firecracker_version=claimed, snapshot_format=claimed_format)
    config = builder.build().replace(vm_id="refused")
    assert not Snapshot.open(other).compatible_with(version)
    with pytest.raises(SnapshotError) as caught:
        firec.Machine.restore(Snapshot.open(other), config)
    assert claimed in str(caught.value) and str(version) in str(caught.value)
    assert caught.value.snapshot_version == claimed
    assert caught.value.target_version == str(version)
    assert not config.vm_dir.exists()


def test_truncated_or_missing_memory_file_is_refused(
    builder: firec.Builder, short_tmp: Path
) -> None:
    snap = take(builder, short_tmp / "snap")
    before = fingerprint(snap)
    truncated = _copy_snapshot(snap, short_tmp / "truncated")
    with open(truncated / "memory", "r+b") as memory:
        memory.truncate((MEM_MIB << 20) // 2)
    config = builder.build().replace(vm_id="truncated")
    with pytest.raises(SnapshotError) as caught:
        firec.Machine.restore(Snapshot.open(truncated), config)
    assert f"{(MEM_MIB << 20) // 2} bytes" in str(caught.value)
    assert str(MEM_MIB << 20) in str(caught.value)
    assert caught.value.path == str(truncated / "memory")
    (truncated / "memory").unlink()
    with pytest.raises(SnapshotError, match=r"memory file .* cannot be used"):
        firec.Machine.restore(Snapshot.open(truncated), config)
    assert not config.vm_dir.exists()
    assert fingerprint(snap) == before


def test_unknown_override_is_refused(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    snap = take(builder, short_tmp / "snap")
    config = builder.build().replace(vm_id="override")
    if version < Version(1, 12, 0):
        with pytest.raises(UnsupportedError) as unsupported:
            firec.Machine.restore(snap, config, network_overrides={"eth9": "tap-x"})
        assert unsupported.value.introduced == "1.12"
    else:
        with pytest.raises(ConfigError) as caught:
            firec.Machine.restore(snap, config, network_overrides={"eth9": "tap-x"})
        assert caught.value.field == "network_overrides"
        assert "'eth9'" in caught.value.reason
    assert not config.vm_dir.exists()


def test_vsock_override_needs_a_vsock_and_1_16(
    backend: str, guest_kernel: Path, short_tmp: Path, vmm_binary: Path, version: Version
) -> None:
    binaries = [vmm_binary]
    if backend == "emulator":
        binaries.append(emulator_wrapper(short_tmp, "1.14"))
    for binary in binaries:
        builder = _builder(None, binary, guest_kernel, short_tmp)
        snap = take(builder, short_tmp / f"snap-{binary.name}")
        config = builder.build().replace(vm_id="vsock")
        target = binary_version(binary)
        if target < Version(1, 16, 0):
            with pytest.raises(UnsupportedError) as caught:
                firec.Machine.restore(snap, config, vsock_override=short_tmp / "v.sock")
            assert caught.value.introduced == "1.16"
            assert caught.value.connected == str(target)
        else:
            with pytest.raises(ConfigError, match="no vsock device"):
                firec.Machine.restore(snap, config, vsock_override=short_tmp / "v.sock")
        assert not config.vm_dir.exists()


def test_snapshot_refuses_a_used_directory_and_a_diff_without_base(
    builder: firec.Builder, short_tmp: Path
) -> None:
    with firec.Machine.create(builder.build()) as machine:
        machine.start()
        with pytest.raises(SnapshotError, match="needs a base"):
            machine.snapshot(short_tmp / "diff", diff=True)
        machine.snapshot(short_tmp / "snap", resume=True)
        with pytest.raises(SnapshotError, match="already holds a snapshot"):
            machine.snapshot(short_tmp / "snap")
        assert machine.state() is MachineState.RUNNING


def test_failed_load_leaves_nothing(builder: firec.Builder, short_tmp: Path) -> None:
    snap = take(builder, short_tmp / "snap")
    broken = _copy_snapshot(snap, short_tmp / "broken")
    (broken / "vmstate").write_bytes(b"not a snapshot state at all" * 10)
    config = builder.build().replace(vm_id="failed-load")
    with pytest.raises(firec.APIError) as caught:
        firec.Machine.restore(Snapshot.open(broken), config)
    assert "snapshot" in caught.value.fault_message.lower()
    assert not config.vm_dir.exists()
    assert _processes_with(f"--id {config.vm_id} ") == []


# -- the Uffd backend --------------------------------------------------------------------------


def test_uffd_restore_serves_pages_and_keeps_running(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    snap = take(builder, short_tmp / "snap")
    before = fingerprint(snap)
    config = builder.build().replace(vm_id="uffd")
    if version < Version(1, 1, 0):
        with pytest.raises(UnsupportedError, match="Uffd"):
            firec.Machine.restore(snap, config, backend="Uffd")
        return
    with firec.Machine.restore(snap, config, backend="Uffd") as restored:
        handler = restored._uffd
        assert handler is not None
        assert handler.wait_connected(5)
        assert handler.peer_pid == restored.pid
        deadline = time.monotonic() + 5
        while handler.pages_served < 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # the count moves just after the page is in place
        assert handler.pages_served >= 1
        assert handler.regions[0].size == MEM_MIB << 20
        time.sleep(0.3)
        assert restored.state() is MachineState.RUNNING
        restored.pause()
        restored.resume()
        assert restored.state() is MachineState.RUNNING
        assert handler.error is None
        socket_path = handler.socket_path
        assert socket_path.is_socket()
        launch = restored.launch
    assert not socket_path.exists()
    assert_nothing_left(launch, restored.pid)
    assert fingerprint(snap) == before


def test_one_uffd_handler_serves_every_clone(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    if version < Version(1, 1, 0):
        pytest.skip(f"the Uffd backend needs Firecracker 1.1; this one is {version}")
    snap = take(builder, short_tmp / "snap")
    config = builder.build().replace(vm_id="ushare")
    with UffdHandler(short_tmp / "u.sock", snap.memory_file, clients=None) as handler:
        clones = firec.Machine.clone(snap, 3, config, backend="Uffd", uffd_handler=handler)
        try:
            assert handler.peers_served == 3
            assert len({c.pid for c in clones}) == 3  # three Firecrackers, one handler
            deadline = time.monotonic() + 5
            while handler.pages_served < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert handler.pages_served >= 3  # every clone's first touches
            clones[0].delete()  # one goes: the others are served on
            clones[1].pause()
            clones[1].resume()
            assert clones[2].state() is MachineState.RUNNING
            assert handler.error is None and handler._thread is not None
            assert handler._thread.is_alive()
        finally:
            for clone in clones:
                clone.delete()
    assert not (short_tmp / "u.sock").exists()


# -- diff snapshots ------------------------------------------------------------------------------


def test_diff_snapshot_flattens_and_restores(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    config = builder.machine_cfg().track_dirty_pages(True).build().build()
    with firec.Machine.create(config) as machine:
        machine.start()
        base = machine.snapshot(short_tmp / "base", resume=True)
        diff = machine.snapshot(short_tmp / "diff", diff=True)
    assert diff.type is SnapshotType.DIFF
    assert diff.parent == base.directory
    assert [s.directory for s in diff.chain()] == [base.directory, diff.directory]
    assert diff.memory_file.stat().st_size == base.memory_file.stat().st_size
    before = {**fingerprint(base), **{f"diff-{k}": v for k, v in fingerprint(diff).items()}}

    flat = diff.flatten(short_tmp / "flat")
    assert flat.type is SnapshotType.FULL and flat.parent is None
    merged = flat.memory_file.read_bytes()
    expected = bytearray(base.memory_file.read_bytes())
    with open(diff.memory_file, "rb") as handle:
        for start, end in data_extents(handle.fileno()):
            expected[start:end] = os.pread(handle.fileno(), end - start, start)
    assert merged == bytes(expected)
    assert {**fingerprint(base), **{f"diff-{k}": v for k, v in fingerprint(diff).items()}} == before
    with firec.Machine.restore(Snapshot.open(flat.directory), config.replace(vm_id="flat")) as r:
        assert r.state() is MachineState.RUNNING


# -- jailed ------------------------------------------------------------------------------------


def test_jailed_snapshot_and_restore(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    if not Path("/sys/fs/cgroup/cpu/cpu.shares").exists():
        pytest.skip("this host has no cgroup v1 cpu controller")
    disk = short_tmp / "data.img"
    disk.write_bytes(b"\0" * (1 << 20))
    os.chown(disk, 1234, 1235)  # a writable drive: the jail's user must be able to write it

    def jailed(vm_id: str) -> Config:
        builder = _builder(vm_id, vmm_binary, guest_kernel, short_tmp).add_drive("data", disk)
        return (
            in_jail(builder.build(), jailer_binary, vmm_binary, short_tmp)
            .cgroup_version(1)
            .cgroup("cpu.shares=100")
            .build()
            .build()
        )

    with firec.Machine.create(jailed("jsource")) as machine:
        machine.start()
        snap = machine.snapshot(short_tmp / "snap", resume=True)
        assert machine.state() is MachineState.RUNNING
        source_launch = machine.launch
    assert_nothing_left(source_launch, machine.pid)
    assert snap.jailed
    assert snap.vm_config["drives"][0]["path_on_host"] == "/data.img"
    before = fingerprint(snap)

    with firec.Machine.restore(snap, jailed("jrestored")) as restored:
        assert restored.state() is MachineState.RUNNING
        jail = restored.launch.jail
        assert jail is not None
        inside = jail.root / snap.memory_file.name
        assert inside.samefile(snap.memory_file)  # a hard link, not a copy
        assert (jail.root / "data.img").samefile(disk)
        assert restored.socket_path.is_relative_to(jail.root)
        launch = restored.launch
    assert_nothing_left(launch, restored.pid)

    if binary_version(vmm_binary) >= Version(1, 1, 0):  # the Uffd backend, jailed
        with firec.Machine.restore(snap, jailed("juffd"), backend="Uffd") as restored:
            assert restored.state() is MachineState.RUNNING
            handler = restored._uffd
            assert handler is not None and handler.wait_connected(5)
            assert handler.socket_path.is_relative_to(short_tmp / "jail")
            assert handler.error is None
            launch = restored.launch
        assert_nothing_left(launch, restored.pid)

    clones = firec.Machine.clone(snap, 3, jailed("jclone"))
    try:
        assert snap.memory_file.stat().st_nlink == 4  # three links, one file
        for clone in clones:
            assert clone.state() is MachineState.RUNNING
            assert clone.launch.jail is not None
            assert (clone.launch.jail.root / "memory").samefile(snap.memory_file)
    finally:
        for clone in clones:
            clone.delete()
    for clone in clones:
        assert_nothing_left(clone.launch, clone.pid)
    assert fingerprint(snap) == before
    assert not (short_tmp / "jail" / vmm_binary.name).exists()


# -- overrides -----------------------------------------------------------------------------------


@pytest.fixture
def taps() -> Iterator[list[str]]:
    """Four fresh tap devices (removed afterwards): one for the source VM, three for clones."""
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("tap devices need root and /dev/net/tun")
    from firec.network.tap import create_tap, delete_link

    names = [f"fs{os.getpid() % 100000}t{i}" for i in range(4)]
    made = []
    try:
        for name in names:
            create_tap(name)
            made.append(name)
        yield names
    finally:
        for name in made:
            delete_link(name)


def test_clones_get_their_own_taps(
    builder: firec.Builder, short_tmp: Path, version: Version, taps: list[str]
) -> None:
    source = builder.add_network_interface(
        models.NetworkInterface(iface_id="eth0", host_dev_name=taps[0])
    )
    snap = take(source, short_tmp / "snap")
    assert snap.interfaces == {"eth0": taps[0]}
    config = builder.build().replace(vm_id="tapclone")
    template = {"eth0": taps[1][:-1] + "{i}"}  # clone i gets tap ...t<i>, i = 1..3 below
    if version < Version(1, 12, 0):
        with pytest.raises(UnsupportedError):
            firec.Machine.clone(snap, 1, config, network_overrides=template)
        assert not (short_tmp / "vms" / "tapclone-0").exists()
        return
    clones = firec.Machine.clone(
        snap, 3, config, network_overrides=lambda i: {"eth0": template["eth0"].format(i=i + 1)}
    )
    try:
        for i, clone in enumerate(clones):
            assert clone.state() is MachineState.RUNNING
            exported = clone.client.get_vm_config().to_api()
            assert [n["host_dev_name"] for n in exported["network-interfaces"]] == [taps[i + 1]]
            assert [n.host_dev_name for n in clone.config.network_interfaces] == [taps[i + 1]]
    finally:
        for clone in clones:
            clone.delete()


def test_vsock_override_moves_the_socket(
    backend: str, builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    if version < Version(1, 16, 0):
        pytest.skip(f"vsock_override needs Firecracker 1.16; this one is {version}")
    snap = take(builder.vsock(3, short_tmp / "v.sock"), short_tmp / "snap")
    assert snap.vm_config["vsock"]["uds_path"] == str(short_tmp / "v.sock")
    moved = short_tmp / "moved" / "v.sock"
    with firec.Machine.restore(snap, builder.build(), vsock_override=moved) as restored:
        exported = restored.client.get_vm_config().to_api()
        assert exported["vsock"]["uds_path"] == str(moved)
        assert restored.config.vsock is not None
        assert restored.config.vsock.uds_path == str(moved)


def test_uffd_restore_with_a_handler_process(
    builder: firec.Builder, short_tmp: Path, version: Version
) -> None:
    if version < Version(1, 1, 0):
        pytest.skip(f"the Uffd backend needs Firecracker 1.1; this one is {version}")
    snap = take(builder, short_tmp / "snap")
    socket_path = short_tmp / "handler.sock"
    handler = subprocess.Popen(
        [sys.executable, "-m", "firec.snapshots.uffd", str(socket_path), str(snap.memory_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert handler.stdout is not None
        assert "listening" in handler.stdout.readline()
        config = builder.build().replace(vm_id="uffd-process")
        with firec.Machine.restore(
            snap, config, backend="Uffd", uffd_handler=str(socket_path)
        ) as restored:
            assert restored._uffd is None  # the caller's handler, not firec's own
            assert restored.state() is MachineState.RUNNING
        out, err = handler.communicate(timeout=10)  # it ends with Firecracker
        assert handler.returncode == 0, err
        assert "served" in out
        assert not socket_path.exists()
    finally:
        if handler.poll() is None:
            handler.kill()
            handler.wait()


@pytest.fixture
def bridge(taps: list[str]) -> Iterator[str]:
    """A fresh Linux bridge (removed afterwards)."""
    host_tools.require("ip")
    name = f"fs{os.getpid() % 100000}br"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_clones_bring_their_own_network_plans(
    builder: firec.Builder, short_tmp: Path, version: Version, taps: list[str], bridge: str
) -> None:
    from firec.network import BridgedNetwork, Interface
    from firec.network.tap import link_exists

    source = builder.add_network_interface(
        models.NetworkInterface(iface_id="eth0", host_dev_name=taps[0])
    )
    snap = take(source, short_tmp / "snap")
    clone_taps = [f"{bridge[:-2]}c{i}" for i in range(2)]

    def configure(i: int, config: Config) -> Config:
        nic = Interface("eth0", clone_taps[i], network=BridgedNetwork(bridge))
        return config.replace(network_interfaces=(nic,), state_dir=short_tmp / "state")

    config = builder.build().replace(vm_id="planclone")
    if version < Version(1, 12, 0):
        with pytest.raises(UnsupportedError, match=clone_taps[0]):
            firec.Machine.clone(snap, 2, config, configure=configure)
        assert not any(link_exists(tap) for tap in clone_taps)
        return
    clones = firec.Machine.clone(snap, 2, config, configure=configure)
    try:
        for clone, tap in zip(clones, clone_taps, strict=True):
            assert clone.state() is MachineState.RUNNING
            exported = clone.client.get_vm_config().to_api()
            assert [n["host_dev_name"] for n in exported["network-interfaces"]] == [tap]
            master = Path(f"/sys/class/net/{tap}/master").resolve().name
            assert master == bridge
    finally:
        for clone in clones:
            clone.delete()
    assert not any(link_exists(tap) for tap in clone_taps)


def test_snapshot_of_a_connected_vm(builder: firec.Builder, short_tmp: Path) -> None:
    with firec.Machine.create(builder.build()) as machine:
        machine.start()
        other = firec.Machine.connect(machine.socket_path)
        try:
            snap = other.snapshot(short_tmp / "snap", resume=True)
        finally:
            other.client.close()
        assert machine.state() is MachineState.RUNNING
    assert snap.vm_id == machine.vm_id
    assert snap.memory_file.stat().st_size == MEM_MIB << 20
    with firec.Machine.restore(snap, builder.build()) as restored:
        assert restored.state() is MachineState.RUNNING


def test_a_diff_is_not_restored_directly(builder: firec.Builder, short_tmp: Path) -> None:
    config = builder.machine_cfg().track_dirty_pages(True).build().build()
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.snapshot(short_tmp / "base", resume=True)
        diff = machine.snapshot(short_tmp / "diff", diff=True)
    target = config.replace(vm_id="diff-direct")
    with pytest.raises(SnapshotError, match="is a diff"):
        firec.Machine.restore(diff, target)
    with pytest.raises(ConfigError, match="Uffd"):
        firec.Machine.restore(diff.flatten(short_tmp / "flat"), target, uffd_handler="/x.sock")
    assert not target.vm_dir.exists()
