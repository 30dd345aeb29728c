"""The microVM lifecycle, on the emulator and (with FIRECRACKER_BIN) on real Firecracker.

Every test boots firec's tiny test guest and checks that whatever happens,
nothing is left behind: no process, socket, directory, jail, cgroup or fifo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import firec
from firec.errors import APIError, ConfigError, MachineError, TimeoutError
from firec.testing.guest import BOOT_LINE, echo_line, guest_args
from firec.vm.config import BootMethod, Config
from firec.vm.console import Console
from firec.vm.state import MachineState
from tests.support import (
    assert_nothing_left,
    console_text,
    fill,
    guest_builder,
    in_jail,
    module_wrapper,
    small_tmpfs,
    zombie,
)


@pytest.fixture
def builder(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> firec.vm.config.Builder:
    """A config builder for the test guest with a random id."""
    return guest_builder(None, vmm_binary, guest_kernel, short_tmp)


# -- booting -------------------------------------------------------------------------


def test_a_binary_heard_from_is_ready_without_asking_its_version_again(
    builder: firec.vm.config.Builder, vmm_binary: Path, tmp_path: Path
) -> None:
    binary = tmp_path / "vmm"
    shutil.copy2(vmm_binary, binary)
    builder = builder.firecracker_binary(binary)
    with firec.Machine.create(builder.build()) as first:
        heard = first.client.known_version
        assert heard is not None
    # the next machine of that binary knows it before it spawns, and boots as well
    assert firec.Machine(builder.build()).client.known_version == heard
    with firec.Machine.create(builder.build()) as second:
        assert second.client.known_version == heard
        second.start()
        assert second.state() is MachineState.RUNNING
    # a binary changed on disk is asked again
    mtime = binary.stat().st_mtime_ns + 1_000_000_000
    os.utime(binary, ns=(mtime, mtime))
    assert firec.Machine(builder.build()).client.known_version is None


def test_boot_print_and_clean_exit(builder: firec.vm.config.Builder) -> None:
    config = builder.kernel_args(f"console=ttyS0 {guest_args(exit=True, echo=['hi'])}").build()
    with firec.Machine.create(config) as machine:
        assert machine.pid is not None
        machine.start()
        status = machine.wait(timeout=10)
        assert status.ok, status
        assert status.code == 0
        text = machine.console_path.read_text() if machine.console_path else ""
        assert BOOT_LINE in text
        assert echo_line("hi") in text
        assert machine.state() is MachineState.EXITED
        launch, pid = machine.launch, machine.pid
    assert_nothing_left(launch, pid)


def test_boot_park_pause_resume_and_stop(builder: firec.vm.config.Builder) -> None:
    config = builder.kernel_args("console=ttyS0").build()
    machine = firec.Machine.create(config)
    try:
        assert machine.state() is MachineState.NOT_STARTED
        machine.start()
        assert machine.state() is MachineState.RUNNING
        assert BOOT_LINE in console_text(machine, BOOT_LINE)
        assert BOOT_LINE in machine.console_lines()
        assert machine.console_lines(1) == machine.console_lines()[-1:]
        machine.pause()
        assert machine.state() is MachineState.PAUSED
        machine.resume()
        assert machine.state() is MachineState.RUNNING
        assert machine.exit_status is None
        status = machine.shutdown(timeout=0.2, term_timeout=5)
        assert not status.ok  # the tiny guest ignores Ctrl+Alt+Del: SIGTERM stopped it
        assert machine.exit_status == status
    finally:
        machine.delete()
    assert_nothing_left(machine.launch, machine.pid)


def test_config_file_boot(builder: firec.vm.config.Builder) -> None:
    config = (
        builder.kernel_args(f"console=ttyS0 {guest_args(echo=['from-file'])}")
        .boot_method(BootMethod.CONFIG_FILE)
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()  # already booted: checks it runs
        assert machine.state() is MachineState.RUNNING
        assert echo_line("from-file") in console_text(machine, echo_line("from-file"))
        exported = machine.client.get_vm_config()
        assert exported.machine_config is not None
        assert exported.machine_config.mem_size_mib == 64
        launch = machine.launch
    assert_nothing_left(launch, machine.pid)


def test_config_file_and_api_boot_give_the_same_vm(builder: firec.vm.config.Builder) -> None:
    exported = {}
    for method in BootMethod:
        config = builder.kernel_args("console=ttyS0").boot_method(method).build()
        with firec.Machine.create(config) as machine:
            machine.start()
            exported[method] = machine.client.get_vm_config().to_api()
    assert exported[BootMethod.API] == exported[BootMethod.CONFIG_FILE]


async def test_async_machines_boot_concurrently(builder: firec.vm.config.Builder) -> None:
    configs = [
        builder.kernel_args(f"console=ttyS0 {guest_args(echo=[f'vm{i}'])}").build()
        for i in range(4)
    ]
    configs = [c.replace(vm_id=f"async-{i}") for i, c in enumerate(configs)]
    machines = await asyncio.gather(*(firec.AsyncMachine.create(c) for c in configs))
    try:
        await asyncio.gather(*(m.start() for m in machines))
        states = await asyncio.gather(*(m.state() for m in machines))
        assert set(states) == {MachineState.RUNNING}
        for i, machine in enumerate(machines):
            assert echo_line(f"vm{i}") in console_text(machine, echo_line(f"vm{i}"))
    finally:
        await asyncio.gather(*(m.delete() for m in machines))
    for machine in machines:
        assert_nothing_left(machine.launch, machine.pid)


async def test_async_clean_exit(builder: firec.vm.config.Builder) -> None:
    config = builder.kernel_args(f"console=ttyS0 {guest_args(exit=True)}").build()
    machine = await firec.AsyncMachine.create(config)
    async with machine:
        await machine.start()
        status = await machine.wait(timeout=10)
        assert status.code == 0
    assert_nothing_left(machine.launch, machine.pid)


def test_console_to_a_callback(builder: firec.vm.config.Builder) -> None:
    lines: list[str] = []
    config = (
        builder.kernel_args(f"console=ttyS0 {guest_args(exit=True, echo=['cb'])}")
        .console(Console.callback(lines.append))
        .build()
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.wait(timeout=10)
        deadline = time.monotonic() + 5
        while echo_line("cb") not in lines and time.monotonic() < deadline:
            time.sleep(0.01)
    assert lines[:2] == [BOOT_LINE, echo_line("cb")]


def test_console_stream_gets_the_bytes_as_written(builder: firec.vm.config.Builder) -> None:
    chunks: list[bytes] = []
    config = (
        builder.kernel_args(f"console=ttyS0 {guest_args(exit=True, echo=['raw'])}")
        .console(Console.stream(chunks.append))
        .build()
    )
    expected = f"{BOOT_LINE}\n{echo_line('raw')}\n".encode()
    with firec.Machine.create(config) as machine:
        machine.start()
        machine.wait(timeout=10)
        deadline = time.monotonic() + 5
        while b"".join(chunks) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
    assert b"".join(chunks) == expected
    assert all(isinstance(chunk, bytes) for chunk in chunks)


async def test_async_console_stream_gets_the_bytes_on_the_loop(
    builder: firec.vm.config.Builder,
) -> None:
    chunks: list[bytes] = []
    threads: set[int] = set()

    def on_output(data: bytes) -> None:
        threads.add(threading.get_ident())
        chunks.append(data)

    config = (
        builder.kernel_args(f"console=ttyS0 {guest_args(exit=True)}")
        .console(Console.stream(on_output))
        .build()
    )
    machine = await firec.AsyncMachine.create(config)
    async with machine:
        await machine.start()
        await machine.wait(timeout=10)
    assert b"".join(chunks) == f"{BOOT_LINE}\n".encode()
    assert threads == {threading.get_ident()}  # called on the loop, no thread


def test_connect_to_a_running_vm(builder: firec.vm.config.Builder) -> None:
    config = builder.kernel_args("console=ttyS0").build()
    with firec.Machine.create(config) as machine:
        machine.start()
        other = firec.Machine.connect(machine.socket_path)
        assert other.vm_id == config.vm_id
        assert other.pid == machine.pid
        other.pause()
        assert machine.state() is MachineState.PAUSED
        other.client.close()


def test_connect_by_vm_id(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> None:
    config = (
        Config.builder("connect-by-id", guest_kernel)
        .firecracker_binary(vmm_binary)
        .kernel_args("console=ttyS0")
        .build()
    )  # the default place, where connect looks
    with firec.Machine.create(config) as machine:
        machine.start()
        other = firec.Machine.connect("connect-by-id")
        assert other.socket_path == machine.socket_path
        assert other.state() is MachineState.RUNNING
        other.client.close()
    with pytest.raises(MachineError, match="no running microVM connect-by-id"):
        firec.Machine.connect("connect-by-id")


def test_wait_times_out_while_the_vm_runs(builder: firec.vm.config.Builder) -> None:
    with firec.Machine.create(builder.kernel_args("console=ttyS0").build()) as machine:
        machine.start()
        with pytest.raises(TimeoutError) as caught:
            machine.wait(timeout=0.1)
        assert str(machine.pid) in str(caught.value)


def test_forwarded_signal_reaches_the_vmm(builder: firec.vm.config.Builder) -> None:
    with firec.Machine.create(builder.kernel_args("console=ttyS0").build()) as machine:
        machine.start()
        previous = signal.getsignal(signal.SIGHUP)
        machine.forward_signals(signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        status = machine.wait(timeout=10)
        assert status.signal == signal.SIGHUP or status.code is not None
    assert signal.getsignal(signal.SIGHUP) == previous


# -- the guest powers off while state() is polled --------------------------------------

#: A guest that prints a while (the 40 echo lines take tens of ms), then resets.
POWER_OFF = f"console=ttyS0 {guest_args(exit=True, echo=[f'line{i}' for i in range(40)])}"
HUNG = "hung while exiting"


def _stopped_well(status: firec.ExitStatus) -> bool:
    """Exited 0, or was hung in Firecracker's shutdown deadlock and ended by firec, saying so."""
    return status.ok or (status.signal == signal.SIGKILL and HUNG in status.reason)


def _poll_until_exited(machine: firec.Machine, within: float = 3.0) -> int:
    started, polls = time.monotonic(), 0
    while (state := machine.state()) is not MachineState.EXITED:
        assert state is MachineState.RUNNING
        polls += 1
        assert time.monotonic() - started < within, f"still {state} after {polls} polls"
    assert time.monotonic() - started < within
    return polls


def test_state_polled_while_the_guest_powers_off(
    backend: str, builder: firec.vm.config.Builder
) -> None:
    """Firecracker never answers a request that reaches it as it stops, nor exits then.

    state() must still say EXITED at once (30 of 30 on real Firecracker), and
    the VMM must be gone: exited 0, or ended by firec when a poll hung it.
    """
    rounds = 30 if backend == "firecracker" else 8
    outcomes = []
    for _ in range(rounds):
        with firec.Machine.create(builder.kernel_args(POWER_OFF).build()) as machine:
            machine.start()
            polls = _poll_until_exited(machine)
            assert polls > 0  # it was polled while running
            status = machine.exit_status
            assert status is not None, "EXITED, yet the VMM still runs"
            assert _stopped_well(status), status
            assert machine.wait(timeout=1) == status
            outcomes.append(status.ok)
            launch, pid = machine.launch, machine.pid
        assert_nothing_left(launch, pid)
    print(f"{outcomes.count(True)} exited 0, {outcomes.count(False)} ended by firec")


async def test_async_state_polled_while_the_guest_powers_off(
    backend: str, builder: firec.vm.config.Builder
) -> None:
    rounds = 10 if backend == "firecracker" else 4
    for _ in range(rounds):
        machine = await firec.AsyncMachine.create(builder.kernel_args(POWER_OFF).build())
        async with machine:
            await machine.start()
            started = time.monotonic()
            pollers = [asyncio.create_task(_async_poll(machine)) for _ in range(3)]
            await asyncio.gather(*pollers)  # three tasks poll at once
            assert time.monotonic() - started < 3
            status = machine.exit_status
            assert status is not None and _stopped_well(status), status
        assert_nothing_left(machine.launch, machine.pid)


async def _async_poll(machine: firec.AsyncMachine) -> None:
    while (state := await machine.state()) is not MachineState.EXITED:
        assert state is MachineState.RUNNING


@pytest.fixture
def slow_stop(short_tmp: Path) -> Path:
    """The emulator, stopping slowly: its vCPU threads and its deadlock window last 0.3 s."""
    return module_wrapper(
        short_tmp / "firecracker-slow-stop", "firec.testing.emulator", "--emulate-slow-stop", "0.3"
    )


def test_a_vmm_hung_by_a_poll_as_it_stops_is_ended(
    slow_stop: Path, guest_kernel: Path, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll that lands in the window hangs the VMM: state() ends it and says EXITED."""
    config = guest_builder(None, slow_stop, guest_kernel, short_tmp).kernel_args(POWER_OFF)
    caplog.set_level("WARNING", logger="firec.machine")
    with firec.Machine.create(config.build()) as machine:
        machine.start()
        _poll_until_exited(machine, within=2.0)
        status = machine.exit_status
        assert status is not None and status.signal == signal.SIGKILL and HUNG in str(status)
        launch, pid = machine.launch, machine.pid
    assert_nothing_left(launch, pid)
    [said] = [r.getMessage() for r in caplog.records if r.name == "firec.machine"]
    assert said.startswith(f"microVM {config.build().vm_id}: firec ended it") and HUNG in said


def test_wait_ends_a_vmm_hung_by_another_clients_request(
    slow_stop: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """Whoever's request hung it, wait() does not block until the VMM is killed at delete."""
    config = guest_builder(None, slow_stop, guest_kernel, short_tmp).kernel_args(POWER_OFF)
    with firec.Machine.create(config.build()) as machine:
        machine.start()
        other = firec.Client(machine.socket_path, timeout=5)  # not the machine's: no watch
        hung = threading.Event()

        def poll() -> None:
            with contextlib.suppress(firec.errors.FirecError):
                while True:
                    other.get_instance_info()
            hung.set()

        threading.Thread(target=poll, daemon=True).start()
        started = time.monotonic()
        status = machine.wait(timeout=10)
        assert time.monotonic() - started < 3
        assert status.signal == signal.SIGKILL and HUNG in status.reason
        assert hung.wait(10)  # the other client's request was never answered
        other.close()
        launch, pid = machine.launch, machine.pid
    assert_nothing_left(launch, pid)


# -- failures leave nothing behind ----------------------------------------------------


def test_missing_kernel_is_refused_before_anything_is_made(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    config = builder.build().replace(kernel_image=short_tmp / "no-such-vmlinux")
    with pytest.raises(ConfigError) as caught:
        firec.Machine.create(config)
    assert caught.value.field == "kernel_image"
    assert "no-such-vmlinux" in str(caught.value)
    assert not config.vm_dir.exists()


def test_bad_drive_path_is_refused_naming_the_drive(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        builder.add_drive("rootfs", short_tmp / "missing.ext4").is_root_device(True).build().build()
    assert "drives[0]" in caught.value.field and "rootfs" in caught.value.field
    assert "missing.ext4" in str(caught.value)


def test_duplicate_drive_ids_and_two_roots_are_refused(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    disk = short_tmp / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    with pytest.raises(ConfigError) as duplicate:
        builder.add_drive("d", disk).build().add_drive("d", disk).build().build()
    assert duplicate.value.field == "drives[1].drive_id"
    with pytest.raises(ConfigError) as roots:
        (
            builder.add_drive("a", disk)
            .is_root_device(True)
            .build()
            .add_drive("b", disk)
            .is_root_device(True)
            .build()
            .build()
        )
    assert "a" in roots.value.reason and "b" in roots.value.reason


def test_firecracker_refusal_during_start_stops_and_cleans(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    not_a_kernel = short_tmp / "not-a-kernel"
    not_a_kernel.write_bytes(b"this is not an ELF file\n" * 100)
    config = builder.build().replace(kernel_image=not_a_kernel)
    machine = firec.Machine.create(config)
    with pytest.raises(APIError) as caught:
        machine.start()
    assert caught.value.fault_message
    assert machine.exit_status is not None  # the VMM was stopped
    machine.delete()
    assert_nothing_left(machine.launch, machine.pid)


def test_vmm_dying_during_configuration(builder: firec.vm.config.Builder) -> None:
    machine = firec.Machine.create(builder.kernel_args("console=ttyS0").build())
    assert machine.pid is not None
    os.kill(machine.pid, signal.SIGKILL)
    with pytest.raises(MachineError) as caught:
        machine.start()
    assert "SIGKILL" in str(caught.value) or "answer" in str(caught.value)
    machine.delete()
    assert_nothing_left(machine.launch, machine.pid)


def _fake_vmm(directory: Path, script: str) -> Path:
    path = directory / "fake-firecracker"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_vmm_exiting_early_shows_its_last_lines(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    fake = _fake_vmm(
        short_tmp, 'echo "Error: cannot open /dev/kvm: Permission denied" >&2\nexit 1\n'
    )
    config = builder.firecracker_binary(fake).build()
    with pytest.raises(MachineError) as caught:
        firec.Machine.create(config)
    assert caught.value.exit_code == 1
    assert any("/dev/kvm" in line for line in caught.value.log_tail)
    assert "/dev/kvm" in str(caught.value)
    assert not config.vm_dir.exists()


def test_vmm_never_ready_times_out_and_is_killed(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    fake = _fake_vmm(short_tmp, 'echo $$ > "$(dirname "$0")/fake.pid"\nexec sleep 60\n')
    config = builder.firecracker_binary(fake).build()
    started = time.monotonic()
    with pytest.raises(MachineError) as caught:
        firec.Machine.create(config, ready_timeout=0.5)
    assert "not ready within 0.5s" in str(caught.value)
    assert time.monotonic() - started < 10
    pid = int((short_tmp / "fake.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or zombie(pid)
    assert not config.vm_dir.exists()


# -- the jailer ---------------------------------------------------------------------------


def _status_ids(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@pytest.mark.parametrize("new_pid_ns", [False, True], ids=["same-pid-ns", "new-pid-ns"])
def test_jailed_boot_as_non_root_in_cgroup_v1(
    jailer_binary: Path,
    vmm_binary: Path,
    guest_kernel: Path,
    short_tmp: Path,
    new_pid_ns: bool,
) -> None:
    if not Path("/sys/fs/cgroup/cpu/cpu.shares").exists():
        pytest.skip("this host has no cgroup v1 cpu controller")
    builder = guest_builder("jailed-vm", vmm_binary, guest_kernel, short_tmp).kernel_args(
        f"console=ttyS0 {guest_args(echo=['jailed'])}"
    )
    config = (
        in_jail(builder, jailer_binary, vmm_binary, short_tmp)
        .cgroup_version(1)
        .cgroup("cpu.shares=100")
        .new_pid_ns(new_pid_ns)
        .build()
        .build()
    )
    jail = config.jail
    assert jail is not None
    owner = (config.kernel_image.stat().st_uid, config.kernel_image.stat().st_gid)
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.state() is MachineState.RUNNING
        pid = machine.pid
        assert pid is not None
        assert _status_ids(pid) == (1234, 1235)
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/{vmm_binary.name}/jailed-vm" in cgroup
        assert (
            Path("/sys/fs/cgroup/cpu") / vmm_binary.name / "jailed-vm" / "cpu.shares"
        ).read_text().strip() == "100"
        kernel_in_jail = jail.root / config.kernel_image.name
        assert kernel_in_jail.samefile(config.kernel_image)  # readable by 1234 as it is: linked
        assert (kernel_in_jail.stat().st_uid, kernel_in_jail.stat().st_gid) == owner  # not given
        assert machine.socket_path.is_relative_to(jail.root)
        assert echo_line("jailed") in console_text(machine, echo_line("jailed"))
        launch = machine.launch
    assert_nothing_left(launch, pid)
    assert not (short_tmp / "jail" / vmm_binary.name).exists()


def test_jailed_daemon_mode(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """--daemonize: the jailer calls setsid() itself; the console is lost, the VM runs."""
    builder = guest_builder("daemon-vm", vmm_binary, guest_kernel, short_tmp)
    builder = builder.kernel_args("console=ttyS0")
    jailed = in_jail(builder, jailer_binary, vmm_binary, short_tmp, gid=1234).daemonize()
    config = jailed.build().build()
    with firec.Machine.create(config) as machine:
        assert "--daemonize" in machine.launch.argv
        machine.start()
        assert machine.state() is MachineState.RUNNING
        pid = machine.pid
        assert pid is not None and os.getsid(pid) == pid  # its own session, made by the jailer
        launch = machine.launch
    assert_nothing_left(launch, pid)


def _owner_mode_mtime(*paths: Path) -> dict[str, tuple[int, int, int, int]]:
    return {
        p.name: (p.stat().st_uid, p.stat().st_gid, p.stat().st_mode, p.stat().st_mtime_ns)
        for p in paths
    }


def test_a_jailed_run_never_changes_the_users_files(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    """Owner, mode and mtime of every file given stay as they were; nothing is chowned.

    The kernel (root's, 0644) and a read-only base image readable by all are
    hard-linked; a read-only image only root may read is copied for the
    jail's user; a writable drive the jail's user owns is hard-linked; a
    writable drive it may not write is refused before anything is made.
    Then the same for a snapshot's files, at restore.
    """
    if not Path("/sys/fs/cgroup/cpu/cpu.shares").exists():
        pytest.skip("this host has no cgroup v1 cpu controller")
    mine = short_tmp / "mine"
    mine.mkdir(mode=0o700)  # the jail's user cannot even reach this directory
    kernel = mine / "vmlinux"
    kernel.write_bytes(guest_kernel.read_bytes())
    base, secret, disk = mine / "base.img", mine / "secret.img", mine / "disk.img"
    for image in (base, secret, disk):
        image.write_bytes(b"\0" * (1 << 20))
    kernel.chmod(0o644)
    base.chmod(0o444)
    secret.chmod(0o600)
    os.chown(disk, 1234, 1235)
    disk.chmod(0o600)
    past = time.time_ns() - 86_400 * 10**9  # a day ago: a touched mtime would show
    for path in (kernel, base, secret, disk):
        os.utime(path, ns=(past, past))
    before = _owner_mode_mtime(kernel, base, secret, disk)

    def jailed(vm_id: str, *drives: tuple[str, Path, bool]) -> Config:
        builder = guest_builder(vm_id, vmm_binary, kernel, short_tmp).kernel_args("console=ttyS0")
        for drive_id, path, read_only in drives:
            builder = builder.add_drive(drive_id, path).is_read_only(read_only).build()
        return in_jail(builder, jailer_binary, vmm_binary, short_tmp).build().build()

    config = jailed(
        "own-files", ("base", base, True), ("secret", secret, True), ("disk", disk, False)
    )
    with firec.Machine.create(config) as machine:
        machine.start()
        assert machine.state() is MachineState.RUNNING
        jail = machine.launch.jail
        assert jail is not None
        for linked in (kernel, base, disk):
            assert (jail.root / linked.name).samefile(linked)
        copy = jail.root / secret.name
        assert not copy.samefile(secret)
        assert (copy.stat().st_uid, copy.stat().st_gid) == (1234, 1235)
        assert copy.read_bytes() == secret.read_bytes()
        snap = machine.snapshot(short_tmp / "snap")
        launch, pid = machine.launch, machine.pid
    assert_nothing_left(launch, pid)
    assert _owner_mode_mtime(kernel, base, secret, disk) == before

    # a writable drive the jail's user may not write: refused, untouched, nothing made
    theirs = mine / "theirs.img"
    theirs.write_bytes(b"\0" * 4096)
    refused = jailed("refused", ("theirs", theirs, False))
    theirs_before = _owner_mode_mtime(theirs)
    with pytest.raises(ConfigError, match=r"drives\[0\].*chown 1234:1235"):
        firec.Machine.create(refused)
    assert _owner_mode_mtime(theirs) == theirs_before
    assert refused.jail is not None and not refused.jail.base.exists()

    # a snapshot's files, as Firecracker left them (the jail's user's) and as root's own
    for owner in ((1234, 1235), (0, 0)):
        for path in snap.files:
            os.chown(path, *owner)
            path.chmod(0o600)
        files = _owner_mode_mtime(*snap.files, kernel, disk)
        restored_config = jailed(f"restored-{owner[0]}", ("disk", disk, False))
        with firec.Machine.restore(snap, restored_config) as restored:
            assert restored.state() is MachineState.RUNNING
            jail = restored.launch.jail
            assert jail is not None
            memory = jail.root / snap.memory_file.name
            assert memory.samefile(snap.memory_file) == (owner == (1234, 1235))
            assert (memory.stat().st_uid, memory.stat().st_gid) == (1234, 1235)
            launch, pid = restored.launch, restored.pid
        assert_nothing_left(launch, pid)
        assert _owner_mode_mtime(*snap.files, kernel, disk) == files


# -- logs and metrics ---------------------------------------------------------------------


def test_log_fifo_goes_to_python_logging(
    builder: firec.vm.config.Builder, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = (
        builder.kernel_args("console=ttyS0")
        .logger(fifo=short_tmp / "vmm.log.fifo", level="Info", show_level=True)
        .build()
    )
    caplog.set_level("DEBUG", logger="firec.vmm")
    with firec.Machine.create(config) as machine:
        assert stat.S_ISFIFO(machine.log_path.stat().st_mode)
        machine.start()
        deadline = time.monotonic() + 10
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        launch = machine.launch
    ours = [r for r in caplog.records if getattr(r, "vm_id", None) == config.vm_id]
    assert ours, "no Firecracker log record reached Python logging"
    assert {r.name for r in ours} == {"firec.vmm"}
    assert all(r.getMessage() for r in ours)
    assert not (short_tmp / "vmm.log.fifo").exists()
    assert_nothing_left(launch, machine.pid)


def test_many_vms_with_a_log_leave_no_logger_behind(
    builder: firec.vm.config.Builder, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A logger is never freed: VMs share the logger "firec.vmm", told apart by ``vm_id``."""
    caplog.set_level("INFO", logger="firec.vmm")

    def run(vm_id: str) -> None:
        config = (
            builder.kernel_args("console=ttyS0")
            .logger(short_tmp / f"{vm_id}.log", level="Info")
            .build()
            .replace(vm_id=vm_id)
        )
        with firec.Machine.create(config) as machine:
            machine.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                getattr(r, "vm_id", None) == vm_id for r in caplog.records
            ):
                time.sleep(0.01)

    run("first-of-many")  # whatever the first VM creates once
    loggers = len(logging.Logger.manager.loggerDict)
    ids = [f"many-{i}" for i in range(4)]
    for vm_id in ids:
        run(vm_id)
    assert len(logging.Logger.manager.loggerDict) == loggers
    seen = {getattr(r, "vm_id", None) for r in caplog.records if r.name == "firec.vmm"}
    assert set(ids) <= seen


def test_a_full_workdir_is_said_not_silently_lost(
    vmm_binary: Path,
    guest_kernel: Path,
    short_tmp: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Firecracker drops what it cannot write: firec warns, naming the files lost."""
    monkeypatch.setattr("firec.vm._sync.lifecycle.SPACE_LOOK", 0.0)  # state() looks every time
    with small_tmpfs(short_tmp / "small") as small:
        config = (
            guest_builder(None, vmm_binary, guest_kernel, small)
            .kernel_args(f"console=ttyS0 {guest_args(echo=['lost'])}")
            .logger(small / "fc.log", level="Info")
            .build()
        )
        filler = fill(small)
        caplog.set_level("WARNING", logger="firec.machine")

        def warnings() -> list[str]:
            found = [r.getMessage() for r in caplog.records if r.name == "firec.machine"]
            caplog.clear()
            return found

        with firec.Machine.create(config) as machine:
            [said] = warnings()
            assert said.startswith(f"microVM {config.vm_id}: no space left for ")
            assert f"the serial console ({machine.console_path}," in said
            assert f"Firecracker's log ({small / 'fc.log'}," in said
            machine.start()
            assert machine.state() is MachineState.RUNNING  # the VM runs...
            time.sleep(0.2)
            assert machine.console_path is not None
            assert machine.console_path.read_text() == ""  # ...and its console is really lost
            assert warnings() == []  # said once while it lasts
            filler.unlink()
            assert machine.state() is MachineState.RUNNING
            assert warnings() == []
            fill(small)  # full again, while it runs
            assert machine.state() is MachineState.RUNNING
            [again] = warnings()
            assert f"the serial console ({machine.console_path}," in again
            launch = machine.launch
        assert_nothing_left(launch, machine.pid)


def test_flush_metrics_returns_a_fresh_snapshot(
    builder: firec.vm.config.Builder, short_tmp: Path
) -> None:
    config = builder.kernel_args("console=ttyS0").metrics(fifo=short_tmp / "metrics.fifo").build()
    with firec.Machine.create(config) as machine:
        machine.start()
        first = machine.flush_metrics()
        second = machine.flush_metrics()
        assert second.utc_timestamp_ms >= first.utc_timestamp_ms
        assert machine.metrics == second
        assert "api_server" in second.groups
    assert not (short_tmp / "metrics.fifo").exists()


def test_flush_metrics_without_a_metrics_path_says_so(builder: firec.vm.config.Builder) -> None:
    with firec.Machine.create(builder.kernel_args("console=ttyS0").build()) as machine:
        machine.start()
        with pytest.raises(MachineError, match="metrics_path or metrics_fifo"):
            machine.flush_metrics()


# -- the API's payload limit -----------------------------------------------------------


def _mmds_of_size(size: int) -> dict[str, str]:
    return {"k": "x" * (size - len('{"k":""}'))}


def test_payload_limit_default_refused_before_sending(builder: firec.vm.config.Builder) -> None:
    """Over 51,200 bytes the machine's client refuses, and the VMM is left unharmed."""
    with firec.Machine.create(builder.build()) as machine:
        machine.client.put_mmds(_mmds_of_size(51200))
        with pytest.raises(firec.errors.ValidationError) as caught:
            machine.client.put_mmds(_mmds_of_size(60_000))
        assert "--http-api-max-payload-size" in str(caught.value)
        assert "60000 bytes" in str(caught.value) and "51200 bytes" in str(caught.value)
        assert machine.client.get_mmds() == _mmds_of_size(51200)  # still serving
        assert machine.exit_status is None


def test_payload_limit_set_in_config_reaches_the_vmm_and_the_client(
    builder: firec.vm.config.Builder,
) -> None:
    config = builder.http_api_max_payload_size(100_000).build()
    assert config.max_payload_size == 100_000
    with firec.Machine.create(config) as machine:
        assert "--http-api-max-payload-size" in machine.launch.argv
        assert machine.client.max_payload_size == 100_000
        machine.client.put_mmds(_mmds_of_size(90_000))  # the VMM takes it: it got the flag
        assert machine.client.get_mmds() == _mmds_of_size(90_000)
        with pytest.raises(firec.errors.ValidationError, match="100000 bytes"):
            machine.client.put_mmds(_mmds_of_size(100_001))
        other = firec.Machine.connect(machine.socket_path)
        assert other.client.max_payload_size == 100_000  # read from its command line
        other.client.close()


def test_payload_limit_in_extra_args_is_known_too(builder: firec.vm.config.Builder) -> None:
    config = builder.extra_args("--http-api-max-payload-size", "70000").build()
    assert config.max_payload_size == 70_000
    with firec.Machine.create(config) as machine:
        assert machine.client.max_payload_size == 70_000
        machine.client.put_mmds(_mmds_of_size(65_000))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"http_api_max_payload_size": 0}, "http_api_max_payload_size"),
        ({"http_api_max_payload_size": True}, "http_api_max_payload_size"),
        ({"http_api_max_payload_size": "big"}, "http_api_max_payload_size"),
        (
            {"http_api_max_payload_size": 9000, "extra_args": ("--http-api-max-payload-size", "1")},
            "http_api_max_payload_size",
        ),
        ({"extra_args": ("--http-api-max-payload-size",)}, "extra_args"),
    ],
)
def test_bad_payload_limits_are_config_errors(
    guest_kernel: Path, change: dict[str, object], field: str
) -> None:
    config = Config(vm_id="limit", kernel_image=guest_kernel).replace(**change)
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert caught.value.field == field


def test_delete_does_not_wait_for_the_kernel_to_reap_the_vmm(
    builder: firec.vm.config.Builder, held_reaper: threading.Event
) -> None:
    # Reaping (the kernel releasing the exited task and its /proc entries) was seen
    # to take seconds on a busy host: delete goes on once the VMM has exited.
    machine = firec.Machine.create(builder.kernel_args("console=ttyS0").build())
    pid = machine.pid
    assert pid is not None
    machine.start()
    done = threading.Event()
    threading.Thread(target=lambda: (machine.delete(), done.set()), daemon=True).start()
    assert done.wait(20), "delete waited for the reap"
    _assert_deleted_and_reaped_once_let(machine, pid, held_reaper)


async def test_async_delete_does_not_wait_for_the_kernel_to_reap_the_vmm(
    builder: firec.vm.config.Builder, held_reaper: threading.Event
) -> None:
    machine = await firec.AsyncMachine.create(builder.kernel_args("console=ttyS0").build())
    pid = machine.pid
    assert pid is not None
    await machine.start()
    await asyncio.wait_for(machine.delete(), 20)
    _assert_deleted_and_reaped_once_let(machine, pid, held_reaper)


def _assert_deleted_and_reaped_once_let(machine: Any, pid: int, reaper: threading.Event) -> None:
    assert zombie(pid) and Path(f"/proc/{pid}").exists()  # exited, not reaped yet
    status = machine.exit_status
    assert status is not None and status.signal == signal.SIGKILL
    assert_nothing_left(machine.launch, pid)
    reaper.set()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{pid}").exists(), "the reaper did not reap the VMM"
