"""Registration: the host record of a VM this process runs, claimed, updated and released.

The boot path takes short cuts here (the pid update changes one field of the
JSON already made; release reads the raw record): what they write and remove
must be what the long way would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
from firec.errors import InUseError
from firec.host.registry import ProcessRef, Registration, Registry, VmRecord
from firec.vm import _codec
from firec.vm._launch import plan
from tests.support import guest_builder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "state")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _config(tmp_path: Path, vm_id: str = "vm-1") -> firec.Config:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    return firec.Config(
        vm_id=vm_id,
        kernel_image=kernel,
        kernel_args="console=ttyS0",
        firecracker_binary=Path(sys.executable),
        workdir=tmp_path / "vms",
    )


def _on_disk(registry: Registry, vm_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(registry.path(vm_id).read_text())
    return data


def test_the_pid_update_writes_what_a_whole_encoding_would(
    tmp_path: Path, registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    """Only the VMM is encoded anew after the spawn: the file must not differ for it."""
    config = _config(tmp_path)
    launch = plan(config)
    registration = Registration.claim(registry, config, launch)
    claimed = _on_disk(registry, "vm-1")
    assert claimed["vmm"] is None and claimed == _codec.encode(registration.record)

    registration.spawned(launch, sleeper.pid)
    expected = VmRecord.new(config, detached=False).with_launch(launch, sleeper.pid)
    written = _on_disk(registry, "vm-1")
    assert written == {**_codec.encode(expected), "created": claimed["created"]}
    assert written == _codec.encode(registration.record)  # the record kept is the one written
    assert registration.record.vmm == ProcessRef.of(sleeper.pid)
    assert registry.load("vm-1") == registration.record

    registration.detach("1.14.2")  # later changes start from it
    detached = registry.load("vm-1")
    assert detached is not None and detached.vmm == ProcessRef.of(sleeper.pid)
    assert detached.detached and detached.firecracker_version == "1.14.2"


def test_a_launch_other_than_the_claims_is_recorded_whole(
    tmp_path: Path, registry: Registry
) -> None:
    config = _config(tmp_path)
    registration = Registration.claim(registry, config, plan(config))
    other = plan(config.replace(log_path=tmp_path / "fc.log"))
    registration.spawned(other, None)
    record = registry.load("vm-1")
    assert record is not None and record.log == str(tmp_path / "fc.log")


def test_with_vmm_is_replace_with_that_field(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    record = VmRecord.new(_config(tmp_path), detached=False)
    ref = ProcessRef.of(sleeper.pid)
    assert record.with_vmm(ref) == record.replace(vmm=ref)
    assert record.with_vmm(ref).to_dict() == record.replace(vmm=ref).to_dict()
    assert record.vmm is None and record.to_dict()["vmm"] is None  # the original is untouched


def test_a_record_made_with_its_launch_is_the_record_given_it_after(tmp_path: Path) -> None:
    config = _config(tmp_path)
    launch = plan(config)
    at_once = VmRecord.new(config, detached=False, origin="x", launch=launch)
    after = VmRecord.new(config, detached=False, origin="x").with_launch(launch, None)
    assert at_once == after.replace(created=at_once.created)


def test_one_of_many_claims_of_a_new_id_wins(tmp_path: Path, registry: Registry) -> None:
    """A new id is claimed without its lock: the record's creation alone must decide."""
    config = _config(tmp_path)
    launch = plan(config)
    won: list[Registration] = []
    lost: list[str] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        try:
            won.append(Registration.claim(registry, config, launch))
        except InUseError as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7, lost
    assert all("'vm-1' is in use" in reason for reason in lost)
    assert registry.load("vm-1") == won[0].record
    won[0].release()
    assert list(registry.vms_dir.iterdir()) == []


def test_release_forgets_the_vm_and_its_lock_file(tmp_path: Path, registry: Registry) -> None:
    config = _config(tmp_path)
    registration = Registration.claim(registry, config, plan(config))
    with registry.lock("vm-1"):  # (a new id is claimed without making its lock file)
        pass
    assert registry.path("vm-1").exists() and (registry.vms_dir / "vm-1.lock").exists()
    registration.release()
    assert not registry.path("vm-1").exists()
    assert not (registry.vms_dir / "vm-1.lock").exists()
    registration.release()  # twice: nothing to do
    assert list(registry.vms_dir.iterdir()) == []


def test_release_leaves_a_record_another_process_took_over(
    tmp_path: Path, registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    config = _config(tmp_path)
    registration = Registration.claim(registry, config, plan(config))
    theirs = registration.record.replace(controller=ProcessRef.of(sleeper.pid))
    registry.save(theirs)  # as if ours was removed (firec rm -f) and the id claimed again
    registration.release()
    assert registry.load("vm-1") == theirs
    assert (registry.vms_dir / "vm-1.lock").exists()  # theirs too


# -- on the emulator and on Firecracker --------------------------------------------------


@pytest.fixture
def builder(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> firec.vm.config.Builder:
    return guest_builder(None, vmm_binary, guest_kernel, short_tmp)


def _recorded(registry: Registry, machine: firec.Machine | firec.AsyncMachine) -> VmRecord:
    record = registry.load(machine.vm_id)
    assert record is not None
    assert record.vmm is not None and record.vmm == ProcessRef.of(machine.pid or -1)
    assert record.socket == str(machine.launch.socket_path)
    assert record.vm_dir == str(machine.launch.vm_dir)
    assert record.to_dict() == VmRecord.from_dict(record.to_dict()).to_dict()
    return record


def _forgotten(registry: Registry, vm_id: str) -> bool:
    return not registry.path(vm_id).exists() and not (registry.vms_dir / f"{vm_id}.lock").exists()


def test_a_machine_is_recorded_with_its_vmm_and_forgotten(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    """Machine.create plans once: the record names the VMM it spawned, and goes with the VM."""
    registry = Registry(short_tmp / "state")
    with firec.Machine.create(builder.build(), registry=registry) as machine:
        machine.start()
        record = _recorded(registry, machine)
        assert record.origin is None
        snap = machine.snapshot(short_tmp / "snap")
    assert _forgotten(registry, machine.vm_id)
    config = builder.build()
    with firec.Machine.restore(snap, config, registry=registry) as restored:
        record = _recorded(registry, restored)
        assert record.origin == f"snapshot:{snap.directory}"
    assert _forgotten(registry, config.vm_id)


async def test_an_async_machine_is_recorded_with_its_vmm_and_forgotten(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    registry = Registry(short_tmp / "state")
    config = builder.boot_method("config-file").build()
    async with await firec.AsyncMachine.create(config, registry=registry) as machine:
        await machine.start()
        _recorded(registry, machine)
    assert _forgotten(registry, config.vm_id)
