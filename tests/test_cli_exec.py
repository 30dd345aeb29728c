"""``firec run IMAGE -- CMD``, ``firec exec`` and ``firec cp``, as processes, on the emulator.

The emulator's guest runs the real ``firec-agent`` as a host process (its
command line names the agent), so the commands run on this host: an "image"
here is any file with the record ``firec image build`` writes beside it
(``<image>.json``: the defaults for commands).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firec.host.registry import Registry
from firec.testing import emulator_binary
from firec.vm import Config
from tests.test_machine_exec import agents_of

ENV_DEFAULTS = {"GREETING": "hi", "PATH": "/usr/local/bin:/usr/bin:/bin"}


@pytest.fixture
def image(short_tmp: Path) -> Path:
    """A stand-in image, with the defaults firec image build records for it."""
    path = short_tmp / "image.ext4"
    path.write_bytes(bytes(1 << 20))
    record = {
        "schema": 1,
        "entrypoint": None,
        "cmd": ["sh", "-c", "echo default $GREETING; pwd"],
        "env": [f"{k}={v}" for k, v in ENV_DEFAULTS.items()],
        "working_dir": "/tmp",
        "user": None,
        "agent": "/.firec/firec-agent",
        "agent_mode": "init",
        "init": "/.firec/firec-agent",
        "source": "test",
    }
    path.with_name("image.ext4.json").write_text(json.dumps(record))
    return path


class Firec:
    """``firec`` as a process, with its own state and work directories."""

    def __init__(self, root: Path, kernel: Path) -> None:
        self.state = root / "state"
        self.workdir = root / "vms"
        self.kernel = kernel
        self.env = {
            **os.environ,
            "FIREC_STATE_DIR": str(self.state),
            "XDG_DATA_HOME": str(root / "data"),  # no fetched kernel
        }

    def __call__(
        self, *args: str, stdin: object = subprocess.DEVNULL, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "firec.cli", *args],
            stdin=stdin,  # type: ignore[arg-type]
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )

    def run(self, image: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        options = ["--kernel", str(self.kernel), "--firecracker-bin", str(emulator_binary())]
        options += ["--workdir", str(self.workdir)]
        return self("run", str(image), *options, *args, **kw)  # type: ignore[arg-type]

    def assert_nothing_left(self) -> None:
        assert Registry(self.state).records() == []
        assert not self.workdir.exists() or list(self.workdir.iterdir()) == []


@pytest.fixture
def firec_cli(short_tmp: Path, guest_kernel: Path) -> Firec:
    return Firec(short_tmp, guest_kernel)


def test_run_streams_the_command_and_exits_with_its_status(firec_cli: Firec, image: Path) -> None:
    ran = firec_cli.run(image, "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert ran.returncode == 5, ran.stderr
    assert ran.stdout == b"out\n"
    assert b"err\n" in ran.stderr
    firec_cli.assert_nothing_left()
    killed = firec_cli.run(image, "--", "sh", "-c", "kill -KILL $$")
    assert killed.returncode == 128 + 9
    firec_cli.assert_nothing_left()


def test_run_uses_the_image_defaults_and_stdin(firec_cli: Firec, image: Path) -> None:
    default = firec_cli.run(image)
    assert (default.returncode, default.stdout) == (0, b"default hi\n/tmp\n"), default.stderr
    read, write = os.pipe()
    os.write(write, b"piped\n")
    os.close(write)
    with os.fdopen(read, "rb") as stdin:
        piped = firec_cli.run(image, "-i", "--", "tr", "a-z", "A-Z", stdin=stdin)
    assert piped.stdout == b"PIPED\n"
    firec_cli.assert_nothing_left()


def test_run_it_gives_a_pty(firec_cli: Firec, image: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        ran = firec_cli.run(image, "-it", "--", "sh", "-c", "tty; exit 4", stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    assert ran.returncode == 4, ran.stderr
    assert b"/dev/pts/" in ran.stdout


def test_detached_exec_and_cp(firec_cli: Firec, image: Path, short_tmp: Path) -> None:
    started = firec_cli.run(image, "-d", "--id", "exec-vm", "--", "true")
    assert started.returncode == 0, started.stderr
    assert b"runs on" in started.stderr
    record = Registry(firec_cli.state).load("exec-vm")
    assert record is not None and record.vmm is not None
    pid = record.vmm.pid
    token = Config.from_dict(record.config).agent.token  # type: ignore[union-attr]
    assert token is not None and len(token) == 32  # kept in the record, for firec exec
    try:
        shown = firec_cli("inspect", "exec-vm")
        assert shown.returncode == 0 and b"firec.agent_token=***" in shown.stdout
        assert token.encode() not in shown.stdout
        done = firec_cli("exec", "exec-vm", "--", "sh", "-c", "echo $GREETING; pwd; exit 3")
        assert (done.returncode, done.stdout) == (3, b"hi\n/tmp\n")
        moved = firec_cli("exec", "-w", "/", "-e", "GREETING=yo", "exec-vm", "--", "sh", "-c",
                          "echo $GREETING; pwd")  # fmt: skip
        assert moved.stdout == b"yo\n/\n"
        tree = short_tmp / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "a.txt").write_text("alpha")
        guest = short_tmp / "guest"  # the emulated guest's files are the host's
        up = firec_cli("cp", str(tree), f"exec-vm:{guest}")
        assert up.returncode == 0, up.stderr
        assert (guest / "sub" / "a.txt").read_text() == "alpha"
        down = firec_cli("cp", f"exec-vm:{guest}/sub/a.txt", str(short_tmp / "a.txt"))
        assert down.returncode == 0, down.stderr
        assert (short_tmp / "a.txt").read_text() == "alpha"
        back = short_tmp / "back"
        back.mkdir()
        assert firec_cli("cp", f"exec-vm:{guest}", str(back)).returncode == 0
        assert (back / "guest" / "sub" / "a.txt").read_text() == "alpha"
        missing = firec_cli("cp", f"exec-vm:{guest}/nope", str(short_tmp / "nope"))
        assert missing.returncode != 0 and b"nope" in missing.stderr
        assert not (short_tmp / "nope").exists()
        both = firec_cli("cp", "a", "b")
        assert both.returncode == 2 and b"one VM:/path" in both.stderr
    finally:
        removed = firec_cli("rm", "-f", "exec-vm")
    assert removed.returncode == 0, removed.stderr
    firec_cli.assert_nothing_left()
    deadline = time.monotonic() + 10
    while agents_of(pid):
        assert time.monotonic() < deadline, "the VM's agent outlived it"
        time.sleep(0.05)


def test_run_refuses_a_command_with_a_kernel(firec_cli: Firec, guest_kernel: Path) -> None:
    ran = firec_cli("run", str(guest_kernel), "--", "true")
    assert ran.returncode == 2
    assert b"go with an IMAGE" in ran.stderr
    no_vm = firec_cli("exec", "nosuch", "--", "true")
    assert no_vm.returncode == 4 and b"nosuch" in no_vm.stderr


def test_an_image_is_told_from_a_kernel(firec_cli: Firec, short_tmp: Path) -> None:
    ext4 = short_tmp / "plain.ext4"
    ext4.write_bytes(bytes(1080) + b"\x53\xef" + bytes(4096))  # an ext4 superblock's magic
    ran = firec_cli("run", str(ext4), "--firecracker-bin", str(emulator_binary()))
    assert ran.returncode == 2
    assert b"is an image, not a kernel" in ran.stderr and b"firec kernel fetch" in ran.stderr
    firec_cli.assert_nothing_left()
