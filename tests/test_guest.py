"""The tiny test guest: it builds into a bootable ELF, and real Firecracker runs it.

The boot tests need a real Firecracker binary named by ``FIRECRACKER_BIN``;
without it they skip.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest

from firec.errors import FirecError, ValidationError
from firec.testing.guest import (
    BOOT_LINE,
    GUEST_FILENAME,
    build_test_guest,
    echo_line,
    guest_args,
)

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_EXEC = 2
EM_X86_64 = 62
PT_LOAD = 1
HIMEM_START = 0x100000  # Firecracker refuses kernels loaded below 1 MiB
ONE_GIB = 1 << 30  # Firecracker identity-maps only the first GiB at entry


def _firecracker_bin() -> str:
    path = os.environ.get("FIRECRACKER_BIN")
    if not path:
        pytest.skip("FIRECRACKER_BIN is not set: no real Firecracker to boot the guest on")
    if not os.access(path, os.X_OK):
        pytest.fail(f"FIRECRACKER_BIN={path} is not an executable file")
    return path


@pytest.fixture
def guest(tmp_path: pathlib.Path) -> pathlib.Path:
    return build_test_guest(tmp_path / "guest")


@pytest.fixture
def workdir() -> Iterator[pathlib.Path]:
    # Short path: a Unix socket path must fit in 108 bytes.
    directory = pathlib.Path(tempfile.mkdtemp(prefix="firec-guest-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- building ---------------------------------------------------------------


def test_build_produces_a_loadable_elf64_x86_64_kernel(guest: pathlib.Path) -> None:
    assert guest.name == GUEST_FILENAME
    data = guest.read_bytes()
    assert data[:4] == ELF_MAGIC
    assert data[4] == ELFCLASS64
    assert data[5] == ELFDATA2LSB
    e_type, e_machine, _version, e_entry, e_phoff = struct.unpack_from("<HHIQQ", data, 16)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    assert e_type == ET_EXEC
    assert e_machine == EM_X86_64
    assert HIMEM_START <= e_entry < ONE_GIB
    loads = []
    for index in range(e_phnum):
        p_type, _flags, _offset, _vaddr, p_paddr, _filesz, p_memsz = struct.unpack_from(
            "<IIQQQQQ", data, e_phoff + index * e_phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_paddr, p_memsz))
    assert loads, "no PT_LOAD segment"
    assert all(start >= HIMEM_START and start + size <= ONE_GIB for start, size in loads)
    assert any(start <= e_entry < start + size for start, size in loads)


def test_build_without_dest_reuses_the_cache(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = build_test_guest()
    assert first.is_relative_to(tmp_path / "cache" / "firec")
    inode = first.stat().st_ino
    second = build_test_guest()
    assert second == first
    assert second.stat().st_ino == inode
    assert [p.name for p in first.parent.iterdir()] == [GUEST_FILENAME]


def test_build_with_missing_compiler_names_it(tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "no-such-cc")
    with pytest.raises(FirecError, match="no-such-cc' not found"):
        build_test_guest(tmp_path / "out", cc=missing)
    assert not (tmp_path / "out").exists()


def _fake_compiler(tmp_path: pathlib.Path, machine: str) -> str:
    script = tmp_path / "fake-cc"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in -dumpmachine) echo {machine};; --version) echo fake 1.0;;\n'
        '*) echo "guest.c:1: error: simulated failure" >&2; exit 1;; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_build_failure_carries_the_compiler_stderr(tmp_path: pathlib.Path) -> None:
    cc = _fake_compiler(tmp_path, "x86_64-linux-gnu")
    out = tmp_path / "out"
    with pytest.raises(FirecError, match="simulated failure") as info:
        build_test_guest(out, cc=cc)
    assert "exited with status 1" in str(info.value)
    assert list(out.iterdir()) == []  # no partial file left behind


def test_build_refuses_a_compiler_for_another_architecture(tmp_path: pathlib.Path) -> None:
    cc = _fake_compiler(tmp_path, "aarch64-linux-gnu")
    with pytest.raises(FirecError, match="targets 'aarch64-linux-gnu'"):
        build_test_guest(tmp_path / "out", cc=cc)


# -- command line -------------------------------------------------------------


def test_guest_args_builds_tokens_in_order() -> None:
    assert guest_args() == ""
    assert guest_args(exit=True) == "firec.exit"
    assert guest_args(echo=["hi", "a=b"]) == "firec.echo=hi firec.echo=a=b"
    assert guest_args(exit=True, echo=("x",)) == "firec.echo=x firec.exit"
    assert echo_line("hi") == "firec-guest: echo hi"


@pytest.mark.parametrize("word", ["", "two words", "tab\there", "caf\u00e9", "nul\x00"])
def test_guest_args_refuses_words_the_guest_cannot_echo(word: str) -> None:
    with pytest.raises(ValidationError) as info:
        guest_args(echo=["ok", word])
    assert info.value.field == "echo[1]"


def test_guest_args_refuses_a_bare_string() -> None:
    with pytest.raises(ValidationError) as info:
        guest_args(echo="hi")
    assert info.value.field == "echo"


# -- booting on real Firecracker ------------------------------------------------


def test_boot_from_config_file_echoes_and_exits(guest: pathlib.Path, workdir: pathlib.Path) -> None:
    firecracker = _firecracker_bin()
    config = {
        "boot-source": {
            "kernel_image_path": str(guest),
            "boot_args": f"console=ttyS0 {guest_args(exit=True, echo=['hi'])}",
        },
        "drives": [],  # real Firecracker refuses a config file without it
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    result = subprocess.run(
        [
            firecracker,
            "--api-sock",
            str(workdir / "api.sock"),
            "--config-file",
            str(config_path),
            *_log_args(workdir),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = (workdir / "firecracker.log").read_text(errors="replace")
    assert result.returncode == 0, f"{result.stderr}\n{log}"
    # With the log in a file, stdout is exactly the guest's serial console.
    assert result.stdout == f"{BOOT_LINE}\n{echo_line('hi')}\n", log


def _log_args(workdir: pathlib.Path) -> list[str]:
    """Send Firecracker's log to a file, so that stdout carries only the serial console.

    Firecracker 1.14 logs to stdout by default, where log lines could interleave with the
    guest's output. Older versions need the file to exist already.
    """
    log = workdir / "firecracker.log"
    log.touch()
    return ["--log-path", str(log)]


class _Firecracker:
    """A real Firecracker process over its API socket, killed and cleaned on exit."""

    def __init__(self, binary: str, workdir: pathlib.Path) -> None:
        self.socket = workdir / "api.sock"
        self.stdout_path = workdir / "stdout"
        self.log_path = workdir / "firecracker.log"
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://localhost",
            timeout=10,
        )
        with open(self.stdout_path, "wb") as stdout:
            self.process = subprocess.Popen(
                [binary, "--api-sock", str(self.socket), *_log_args(workdir)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
            )

    def wait_for_api(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"firecracker exited with {self.process.returncode}: {self.diagnostics()}"
                )
            if self.socket.exists():
                try:
                    self.client.get("/")
                    return
                except httpx.TransportError:
                    pass  # bound but not yet listening
            if time.monotonic() > deadline:
                pytest.fail(f"no API socket after {timeout}s: {self.diagnostics()}")
            time.sleep(0.01)

    def wait_for_line(self, line: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.output().splitlines():
            if time.monotonic() > deadline:
                pytest.fail(f"no {line!r} on the console after {timeout}s: {self.diagnostics()}")
            time.sleep(0.01)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def diagnostics(self) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"console:\n{self.output()}\nlog:\n{log}"

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def firecracker(workdir: pathlib.Path) -> Iterator[_Firecracker]:
    vmm = _Firecracker(_firecracker_bin(), workdir)
    try:
        yield vmm
    finally:
        vmm.close()


def test_boot_over_api_parks_and_stays_running(
    guest: pathlib.Path, firecracker: _Firecracker
) -> None:
    firecracker.wait_for_api()
    api = firecracker.client
    boot_args = f"console=ttyS0 {guest_args(echo=['parked'])}"
    response = api.put(
        "/boot-source", json={"kernel_image_path": str(guest), "boot_args": boot_args}
    )
    assert response.status_code == 204, response.text
    response = api.put("/machine-config", json={"vcpu_count": 1, "mem_size_mib": 128})
    assert response.status_code == 204, response.text
    response = api.put("/actions", json={"action_type": "InstanceStart"})
    assert response.status_code == 204, response.text

    firecracker.wait_for_line(BOOT_LINE)
    firecracker.wait_for_line(echo_line("parked"))
    info = api.get("/")
    assert info.status_code == 200, info.text
    assert info.json()["state"] == "Running"
    assert firecracker.process.poll() is None  # parked, not exited
    assert firecracker.output() == f"{BOOT_LINE}\n{echo_line('parked')}\n"
