"""Host state: VM records, process identity, locks, config round trips, reaping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
import firec.network as fn
from firec.api import models
from firec.errors import ConfigError, FirecError, InUseError, MachineError, StateError
from firec.host.registry import (
    NetworkInfo,
    Phase,
    ProcessRef,
    Registry,
    VmRecord,
    find_unrecorded_vmm,
    reap,
    state_dir,
)
from firec.vm.console import Console


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "state")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that runs until killed (reaped at the end)."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _config(tmp_path: Path, vm_id: str = "vm-1", **changes: object) -> firec.Config:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    config = firec.Config(
        vm_id=vm_id,
        kernel_image=kernel,
        firecracker_binary=Path(sys.executable),
        workdir=tmp_path / "vms",
    )
    return config.replace(**changes)


# -- where the state is ------------------------------------------------------------------------


def test_state_dir_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIREC_STATE_DIR", str(tmp_path / "s"))
    assert state_dir() == tmp_path / "s"


def test_state_dir_root_and_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FIREC_STATE_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert state_dir() == Path("/run/firec/state")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "firec"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "firec"


# -- process identity --------------------------------------------------------------------------


def test_process_ref_of_a_running_process(sleeper: subprocess.Popen[bytes]) -> None:
    ref = ProcessRef.of(sleeper.pid)
    assert ref is not None and ref.alive()
    assert ref.pid == sleeper.pid and ref.boot


def test_a_reused_pid_is_not_the_recorded_process(sleeper: subprocess.Popen[bytes]) -> None:
    ref = ProcessRef.of(sleeper.pid)
    assert ref is not None
    impostor = ProcessRef(ref.pid, ref.start + 1, ref.boot)  # same pid, started later
    assert not impostor.alive()
    assert not impostor.signal(signal.SIGKILL)  # never signalled
    assert sleeper.poll() is None
    other_boot = ProcessRef(ref.pid, ref.start, "another-boot")
    assert not other_boot.alive()


def test_a_zombie_is_not_alive_and_then_reaped() -> None:
    process = subprocess.Popen(["true"])
    ref = ProcessRef.of(process.pid)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{process.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ProcessRef.of(process.pid) is None
    if ref is not None:  # it may have exited before we looked
        assert not ref.alive() and not ref.reaped()
        process.wait()
        assert ref.reaped()


def test_no_process() -> None:
    assert ProcessRef.of(2**22 + 12345) is None


# -- configs -----------------------------------------------------------------------------------


def test_config_round_trip_with_every_kind_of_field(tmp_path: Path) -> None:
    config = (
        firec.Config.builder("vm-rt", tmp_path)
        .kernel_args("console=ttyS0")
        .initrd_path(tmp_path / "initrd")
        .machine_cfg()
        .vcpu_count(2)
        .mem_size_mib(256)
        .track_dirty_pages(True)
        .build()
        .add_drive("rootfs", tmp_path / "root.ext4")
        .is_root_device(True)
        .is_read_only(True)
        .rate_limiter(models.RateLimiter(bandwidth=models.TokenBucket(size=1000, refill_time=10)))
        .build()
        .vsock(3, tmp_path / "v.sock")
        .mmds({"a": {"b": 1}}, network_interfaces=["eth0"])
        .balloon(64, deflate_on_oom=True)
        .log_level("Debug")
        .boot_method("config-file")
        .console(Console.file(tmp_path / "console.log"))
        .add_network_interface(
            fn.Interface(
                "eth0",
                "tap0",
                guest_mac="06:00:00:00:00:01",
                network=fn.RoutedNetwork(
                    subnet="172.30.0.0/16",
                    nameservers=("1.1.1.1", "2606:4700::1111"),
                    port_forwards=(fn.PortForward(2222, 22), fn.PortForward(53, protocol="udp")),
                    egress_allow=("10.0.0.0/8",),
                ),
            )
        )
        .add_network_interface(fn.Interface("eth1", "tap1", network=fn.BridgedNetwork("br0")))
        .add_network_interface(
            fn.Interface(
                "eth2",
                "tap2",
                network=fn.CNINetwork(
                    {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}
                ),
            )
        )
        .add_network_interface(fn.Interface("eth3", "tap3"))
        .jailer_cfg()
        .jailer_binary("/usr/bin/jailer")
        .exec_file(sys.executable)
        .uid(123)
        .gid(456)
        .cgroup("cpuset.cpus=0")
        .cgroup_version(1)
        .new_pid_ns()
        .resource_limit("no-file=1024")
        .build()
        .build(check_files=False)
    )
    data = json.loads(json.dumps(config.to_dict()))  # survives JSON
    assert firec.Config.from_dict(data) == config


def test_config_defaults_are_left_out(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert set(config.to_dict()) == {"vm_id", "kernel_image", "firecracker_binary", "workdir"}


def test_a_callback_console_comes_back_as_discard(tmp_path: Path) -> None:
    config = _config(tmp_path, console=Console.callback(print))
    data = config.to_dict()
    assert data["console"] == {"kind": "callback", "path": None}
    assert firec.Config.from_dict(data).console == Console.discard()


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"vm_id": "x"}, "kernel_image"),
        ({"vm_id": "x", "kernel_image": "/k", "bogus": 1}, "bogus"),
        ({"vm_id": "x", "kernel_image": "/k", "machine": {"vcpu_count": "two"}}, "vcpu_count"),
        ({"vm_id": 5, "kernel_image": "/k"}, "vm_id"),
    ],
)
def test_config_from_dict_refuses_what_is_not_a_config(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        firec.Config.from_dict(data)


# -- records -----------------------------------------------------------------------------------


def test_record_round_trip(tmp_path: Path, registry: Registry) -> None:
    record = VmRecord.new(_config(tmp_path), detached=True).replace(
        network=NetworkInfo(
            state_dir="/x",
            netns="fc-vm-1",
            interfaces=({"iface_id": "eth0", "tap": "t", "address": "172.30.0.2/16"},),
            nft={"table": "inet firec", "chain": "vm_1"},
        ),
        jail_owner=(1, 2),
        cgroups=("/sys/fs/cgroup/cpu/x/vm-1",),
    )
    registry.create(record)
    assert registry.load("vm-1") == record
    raw = json.loads(registry.path("vm-1").read_text())
    assert raw["format"] == "firec-vm/1" and raw["phase"] == "starting"
    assert raw["controller"]["pid"] == os.getpid()


def test_a_new_record_names_this_process_as_controller(tmp_path: Path) -> None:
    record = VmRecord.new(_config(tmp_path), detached=False)
    assert record.phase is Phase.STARTING
    assert record.controller_alive() and not record.vmm_alive()
    assert not record.abandoned() and not record.stale()


def test_ids_are_unique(tmp_path: Path, registry: Registry) -> None:
    registry.create(VmRecord.new(_config(tmp_path), detached=True))
    with pytest.raises(InUseError, match="'vm-1' is in use: it is already recorded"):
        registry.create(VmRecord.new(_config(tmp_path), detached=True))


def test_records_find_and_remove(tmp_path: Path, registry: Registry) -> None:
    for vm_id in ("abc1", "abc2", "xyz"):
        registry.create(VmRecord.new(_config(tmp_path, vm_id), detached=True))
    (registry.vms_dir / "broken.json").write_text("{not json")
    assert [r.vm_id for r in registry.records()] == ["abc1", "abc2", "xyz"]
    assert [r.vm_id for r in registry.find("abc")] == ["abc1", "abc2"]
    assert [r.vm_id for r in registry.find("abc2")] == ["abc2"]
    assert registry.find("nope") == [] and registry.find("") == []
    with pytest.raises(FirecError, match=r"broken\.json"):
        registry.load("broken")
    registry.remove("xyz")
    registry.remove("xyz")  # twice is fine
    assert registry.load("xyz") is None
    assert [r.vm_id for r in registry.records()] == ["abc1", "abc2"]


def test_a_record_of_another_format_is_refused(registry: Registry) -> None:
    registry.vms_dir.mkdir(parents=True)
    registry.path("old").write_text(json.dumps({"format": "firec-vm/0", "vm_id": "old"}))
    with pytest.raises(FirecError, match="firec-vm/1"):
        registry.load("old")


def test_a_record_of_a_newer_firec_is_refused_naming_both_formats(registry: Registry) -> None:
    registry.vms_dir.mkdir(parents=True)
    registry.path("new").write_text(json.dumps({"format": "firec-vm/2", "vm_id": "new"}))
    with pytest.raises(StateError, match=r"new\.json.*firec-vm/2.*firec-vm/1"):
        registry.load("new")
    assert registry.records() == []


# A record as the previous firec wrote it (the same format, firec-vm/1).
PREVIOUS_RECORD = {
    "cgroups": [],
    "config": {"kernel_args": "console=ttyS0", "kernel_image": "/k", "vm_id": "old-1"},
    "console": None,
    "controller": {"boot": "45e1b259-f436-4b9e-98c3-fca86691e299", "pid": 30026, "start": 1314346},
    "created": "2026-12-03T18:30:46+00:00",
    "detached": True,
    "files": [],
    "firecracker_version": None,
    "format": "firec-vm/1",
    "jail": None,
    "jail_owner": None,
    "log": None,
    "log_is_fifo": False,
    "metrics": None,
    "metrics_is_fifo": False,
    "network": None,
    "origin": None,
    "phase": "starting",
    "socket": None,
    "stderr": None,
    "vm_dir": None,
    "vm_id": "old-1",
    "vmm": None,
}


def test_a_record_of_the_previous_firec_is_read(registry: Registry) -> None:
    registry.vms_dir.mkdir(parents=True)
    registry.path("old-1").write_text(json.dumps(PREVIOUS_RECORD, indent=2))
    record = registry.load("old-1")
    assert record is not None and record.phase is Phase.STARTING
    assert record.vm_config.kernel_args == "console=ttyS0"
    assert record.to_dict() == PREVIOUS_RECORD
    registry.save(record)
    assert json.loads(registry.path("old-1").read_text()) == PREVIOUS_RECORD


def test_the_lock_keeps_other_processes_out(registry: Registry) -> None:
    registry.vms_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys, time\n"
            f"with filelock.FileLock({str(registry.vms_dir / 'vm-1.lock')!r}):\n"
            "    print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with (
            pytest.raises(MachineError, match="another firec process"),
            registry.lock("vm-1", timeout=0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with registry.lock("vm-1", timeout=5):  # free once its holder died
        pass


def test_prune_locks_removes_only_unused_lock_files(tmp_path: Path, registry: Registry) -> None:
    registry.create(VmRecord.new(_config(tmp_path, "kept"), detached=True))
    with registry.lock("kept"), registry.lock("gone"):
        pass
    assert registry.prune_locks() == ["gone"]
    assert (registry.vms_dir / "kept.lock").exists()
    assert not (registry.vms_dir / "gone.lock").exists()


# -- staleness ---------------------------------------------------------------------------------


def _dead_ref() -> ProcessRef:
    process = subprocess.Popen(["true"])
    ref = ProcessRef.of(process.pid) or ProcessRef(process.pid, 1, "")
    process.wait()
    return ref


def test_stale_and_abandoned(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    live, dead = ProcessRef.of(sleeper.pid), _dead_ref()
    assert live is not None
    base = VmRecord.new(_config(tmp_path), detached=True)
    # detached and running, its controller gone: fine
    running = base.replace(phase=Phase.STARTED, vmm=live, controller=dead)
    assert not running.stale() and not running.abandoned()
    # foreground and running, its controller gone: abandoned
    orphan = running.replace(detached=False)
    assert orphan.abandoned() and not orphan.stale()
    # the VMM exited
    exited = running.replace(vmm=dead)
    assert exited.stale()
    # still starting: stale only once its controller died
    starting = base.replace(controller=ProcessRef.of(os.getpid()))
    assert not starting.stale() and not starting.abandoned()
    crashed = base.replace(controller=dead)
    assert crashed.stale() and crashed.abandoned()


# -- reaping -----------------------------------------------------------------------------------


def _fake_vm(tmp_path: Path, registry: Registry, vmm: ProcessRef | None) -> VmRecord:
    """A record of a 'VM' whose files exist, as a crashed controller would leave them."""
    vm_dir = tmp_path / "vms" / "vm-1"
    vm_dir.mkdir(parents=True)
    (vm_dir / "console.log").write_text("hello\n")
    socket = vm_dir / "firecracker.socket"
    socket.write_text("")
    outside = tmp_path / "outside.sock"
    outside.write_text("")
    record = VmRecord.new(_config(tmp_path), detached=False).replace(
        phase=Phase.STARTED,
        vmm=vmm,
        controller=_dead_ref(),
        socket=str(socket),
        vm_dir=str(vm_dir),
        console=str(vm_dir / "console.log"),
        log=str(vm_dir / "firecracker.log"),
        files=(str(outside),),
    )
    registry.create(record)
    return record


def test_reap_kills_the_vmm_and_removes_everything(
    tmp_path: Path, registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    record = _fake_vm(tmp_path, registry, ProcessRef.of(sleeper.pid))
    with registry.lock(record.vm_id):
        done = reap(registry, record)
    assert "killed the VMM" in done and "forgot it" in done
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert not Path(str(record.vm_dir)).exists()
    assert not (tmp_path / "outside.sock").exists()
    assert registry.load("vm-1") is None


def test_reap_leaves_a_reused_pid_alone(
    tmp_path: Path, registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    ref = ProcessRef.of(sleeper.pid)
    assert ref is not None
    record = _fake_vm(tmp_path, registry, ProcessRef(ref.pid, ref.start - 1, ref.boot))
    done = reap(registry, record)
    assert "killed the VMM" not in done
    assert sleeper.poll() is None
    assert registry.load("vm-1") is None


def test_reap_finds_a_vmm_whose_pid_was_never_recorded(tmp_path: Path, registry: Registry) -> None:
    record = _fake_vm(tmp_path, registry, None)
    assert record.socket is not None
    # a process with the VMM's command line, as if spawned just before the controller died
    stray = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(300)",
            "--api-sock",
            record.socket,
            "--id",
            record.vm_id,
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while stray.pid not in find_unrecorded_vmm(record):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert "killed the VMM" in reap(registry, record)
        assert stray.wait(timeout=10) == -signal.SIGKILL
    finally:
        stray.kill()
        stray.wait()


def test_reap_keeps_the_record_when_something_cannot_be_removed(
    tmp_path: Path, registry: Registry
) -> None:
    record = _fake_vm(tmp_path, registry, None)
    stubborn = tmp_path / "a-directory"
    (stubborn / "inside").mkdir(parents=True)
    record = record.replace(files=(str(stubborn),))
    registry.save(record)
    with pytest.raises(MachineError, match="a-directory") as caught:
        reap(registry, record)
    assert "record kept" in str(caught.value)
    assert registry.load("vm-1") is not None
    stubborn.joinpath("inside").rmdir()
    stubborn.rmdir()
    reap(registry, record)  # again, once fixed
    assert registry.load("vm-1") is None


def test_the_launch_comes_from_the_record_alone(tmp_path: Path, registry: Registry) -> None:
    record = _fake_vm(tmp_path, registry, None).replace(
        config={"vm_id": "vm-1", "kernel_image": "/k", "firecracker_binary": "/gone/firecracker"}
    )
    launch = record.launch()  # no binary needed: nothing is re-planned
    assert launch.vm_dir == Path(str(record.vm_dir))
    assert launch.socket_path == Path(str(record.socket))
    assert launch.console_path == Path(str(record.console))


def test_a_record_whose_config_cannot_be_read_can_still_be_reaped(
    tmp_path: Path, registry: Registry
) -> None:
    record = _fake_vm(tmp_path, registry, None).replace(config={"vm_id": "vm-1", "bogus": 1})
    registry.save(record)
    assert record.launch().vm_dir == Path(str(record.vm_dir))
    reap(registry, record)
    assert not Path(str(record.vm_dir)).exists() and registry.load("vm-1") is None
