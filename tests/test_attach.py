"""``firec attach``: a detached VM's serial console, input included, in real processes.

On the emulator, whose guest echoes its serial input with ``firec.echo-input``,
what is typed comes back on the console; on real Firecracker (``FIRECRACKER_BIN``)
the tiny guest reads no input, so the test checks that Firecracker takes the bytes
from its standard input and the VM runs on.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
from firec.cli.attach import INPUT_NAME, _DetachMatcher, parse_detach_keys
from firec.cli.output import ExitCode
from firec.cli.vms import VmState, live_state
from firec.errors import ConfigError, FirecError
from firec.testing.guest import BOOT_LINE
from firec.vm.console import Console, open_console_input
from tests.test_cli_lifecycle import Cli, nothing_left, wait_for

pytestmark = pytest.mark.needs_tool("cc")

ECHOING = "console=ttyS0 firec.echo-input"  # the emulated guest echoes its input
DETACH = b"\x10\x11"  # ctrl-p ctrl-q


@pytest.fixture
def cli(vmm_binary: Path, short_tmp: Path) -> Iterator[Cli]:
    env = {**os.environ, "FIREC_STATE_DIR": str(short_tmp / "state")}
    runner = Cli(env, short_tmp / "vms", vmm_binary)
    try:
        yield runner
    finally:
        subprocess.run(
            runner.command("rm", "-f", *runner.ls()), env=env, capture_output=True, timeout=60
        )


def attach(
    cli: Cli, vm: str, *args: str, stdin: int | None = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli.command("attach", vm, *args),
        env=cli.env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(fd: int, wanted: bytes, seen: bytearray, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"never saw {wanted!r}; got {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended before {wanted!r}; got {bytes(seen)!r}"
            seen += chunk
    return bytes(seen)


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_typed_input_reaches_the_guest_and_detach_keys_leave(cli: Cli) -> None:
    record = cli.run_detached("vm1", "--boot-args", ECHOING)
    assert record.console is not None
    fifo = Path(record.console).with_name(INPUT_NAME)
    assert fifo.is_fifo()
    process = attach(cli, "vm1")
    assert process.stdin is not None and process.stdout is not None
    seen = bytearray()
    read_until(process.stdout.fileno(), BOOT_LINE.encode(), seen)  # the tail comes first
    process.stdin.write(b"hello from the host\n")
    process.stdin.flush()
    read_until(process.stdout.fileno(), b"hello from the host\n", seen)
    process.stdin.write(b"x\x10y" + DETACH + b"never sent")  # ctrl-p alone is passed on
    process.stdin.flush()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert b"detached from microVM vm1; it runs on" in err
    assert live_state(cli.registry.load("vm1")) is VmState.RUNNING  # type: ignore[arg-type]
    console = Path(record.console).read_bytes()
    assert console.endswith(b"hello from the host\nx\x10y")  # echoed by the guest
    assert b"never sent" not in console

    cli("rm", "-f", "vm1")
    nothing_left(record)
    assert not fifo.exists()


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_attach_ends_when_the_vm_exits(cli: Cli) -> None:
    cli.run_detached("vm1", "--boot-args", ECHOING)
    process = attach(cli, "vm1", "--tail", "0", stdin=subprocess.DEVNULL)  # input ends at once
    time.sleep(0.5)  # the output goes on
    assert process.poll() is None
    cli("stop", "vm1")
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert b"microVM vm1 exited" in err and BOOT_LINE.encode() not in out  # --tail 0


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_on_a_terminal_keys_go_raw_to_the_guest_and_the_terminal_is_restored(cli: Cli) -> None:
    cli.run_detached("vm1", "--boot-args", ECHOING)
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    try:
        process = subprocess.Popen(
            cli.command("attach", "vm1", "--detach-keys", "ctrl-a,d"),
            env=cli.env,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
        seen = bytearray()
        read_until(controller, b"ctrl-a,d leaves", seen)
        os.write(controller, b"ab\x03cd\r")  # Ctrl-C is a key like any other, sent raw
        read_until(controller, b"ab\x03cd\r", seen)
        assert process.poll() is None
        os.write(controller, b"\x01d")
        assert process.wait(timeout=20) == 0
        read_until(controller, b"it runs on", seen)
        assert termios.tcgetattr(terminal) == before
    finally:
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("backend", ["emulator"], indirect=True)
def test_what_cannot_be_attached_is_explained(cli: Cli) -> None:
    record = cli.run_detached("vm1", "--boot-args", ECHOING)
    assert record.console is not None
    Path(record.console).with_name(INPUT_NAME).unlink()  # as a VM started before attach was
    err = cli.fails(ExitCode.WRONG_STATE, "attach", "vm1")
    assert "no console input (the VM was started without one)" in err
    assert "firec console vm1" in err
    cli("stop", "vm1")
    assert "microVM vm1 is not running" in cli.fails(ExitCode.WRONG_STATE, "attach", "vm1")
    assert "ctrl-" in cli.fails(ExitCode.USAGE, "attach", "vm1", "--detach-keys", "ctrl-é")


@pytest.mark.parametrize("backend", ["firecracker"], indirect=True)
def test_real_firecracker_reads_the_input_and_runs_on(cli: Cli) -> None:
    record = cli.run_detached("vm1")  # the tiny guest parks; it reads no input
    assert record.console is not None
    fifo = Path(record.console).with_name(INPUT_NAME)
    fd = open_console_input(fifo)
    try:
        os.write(fd, b"hi firecracker\n")

        def unread() -> int:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]

        wait_for(lambda: unread() == 0)  # Firecracker took the bytes from its stdin
    finally:
        os.close(fd)
    process = attach(cli, "vm1")
    assert process.stdin is not None
    process.stdin.write(b"more input\n" + DETACH)
    process.stdin.flush()
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0 and b"detached" in err, err
    assert live_state(cli.registry.load("vm1")) is VmState.RUNNING  # type: ignore[arg-type]
    assert record.vmm is not None and record.vmm.alive()


# -- the SDK's console input -----------------------------------------------------------------


def test_a_console_input_fifo_through_the_sdk(short_tmp: Path, guest_kernel: Path) -> None:
    from tests.support import emulator_wrapper

    fifo = short_tmp / "elsewhere" / "guest.in"
    fifo.parent.mkdir()
    config = (
        firec.Config.builder("vm-in", guest_kernel)
        .kernel_args(ECHOING)
        .workdir(short_tmp / "vms")
        .firecracker_binary(emulator_wrapper(short_tmp))
        .console(Console.file(short_tmp / "console.log", input=fifo))
        .build()
    )
    assert firec.Config.from_dict(config.to_dict()).console == config.console  # kept in records
    with firec.Machine.create(config) as machine:
        machine.start()
        fd = open_console_input(fifo)
        os.write(fd, b"typed\n")
        os.close(fd)  # the last writer but the VMM's own: no end of input for it
        fd = open_console_input(fifo)
        os.write(fd, b"again\n")
        os.close(fd)
        wait_for(lambda: (short_tmp / "console.log").read_bytes().endswith(b"typed\nagain\n"))
    assert not fifo.exists()  # removed with the VM, even outside its directory
    with pytest.raises(FirecError, match="no console input"):
        open_console_input(fifo)


def test_a_terminal_console_takes_no_input_fifo() -> None:
    with pytest.raises(ConfigError, match="reads the terminal"):
        Console.terminal().with_input("/tmp/x")


def test_detach_keys() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == DETACH
    assert parse_detach_keys("ctrl-a, d") == b"\x01d"
    for bad in ("", "ctrl-pp", "ab", "ctrl-1"):
        with pytest.raises(ConfigError):
            parse_detach_keys(bad)
    matcher = _DetachMatcher(DETACH)
    assert matcher.feed(b"ab\x10") == (b"ab", False)  # held back: it may start the sequence
    assert matcher.feed(b"c") == (b"\x10c", False)  # it did not
    assert matcher.feed(b"\x10\x10") == (b"\x10", False)
    assert matcher.feed(b"\x11rest") == (b"", True)
