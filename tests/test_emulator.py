"""Behaviour of the Firecracker emulator, checked against real Firecracker too.

Every test runs against the emulator (``[emulator]``) and, where FIRECRACKER_BIN
names a real Firecracker, against that binary (``[real]``) with the same
assertions. The emulator imitates the release of that binary (or
FIREC_EMULATOR_VERSION, default 1.16).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from firec.testing.guest import build_test_guest
from tests import host_tools

REAL = os.environ.get("FIRECRACKER_BIN") or None


def _real_minor() -> int | None:
    if REAL is None:
        return None
    out = subprocess.run([REAL, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Firecracker v1\.(\d+)", out)
    return int(match.group(1)) if match else None


REAL_MINOR = _real_minor()
EMU_VERSION = os.environ.get("FIREC_EMULATOR_VERSION") or (
    f"1.{REAL_MINOR}" if REAL_MINOR is not None else "1.16"
)
MINOR = int(EMU_VERSION.split(".")[1])
MODERN = MINOR >= 6
# Real Firecracker writes log lines and the guest's serial bytes to the same stdout, so a log
# line can land inside a serial line: tests reading serial output keep the logs quiet.
QUIET = ["--level", "Error"] if MINOR >= 5 else []
PREBOOT_ONLY = "The requested operation is not supported before starting the microVM."
POSTBOOT_ONLY = "The requested operation is not supported after starting the microVM."


@pytest.fixture(params=["emulator", "real"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "real" and REAL is None:
        pytest.skip("FIRECRACKER_BIN is not set: no real Firecracker to compare with")
    return str(request.param)


def command(backend: str) -> list[str]:
    if backend == "real":
        assert REAL is not None
        return [REAL]
    return [sys.executable, "-m", "firec.testing.emulator", "--emulate-version", EMU_VERSION]


@pytest.fixture(scope="session")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> str:
    host_tools.require("cc")
    return str(build_test_guest(tmp_path_factory.mktemp("guest")))


class Vmm:
    """One spawned VMM (emulator or real) with its stdout/stderr in files."""

    def __init__(self, backend: str, workdir: Path, *flags: str, api: bool = True) -> None:
        self.workdir = workdir
        self.sock = str(workdir / "api.sock")
        args = command(backend) + (["--api-sock", self.sock] if api else []) + list(flags)
        self.out = workdir / "stdout"
        self.err = workdir / "stderr"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=self.sock), base_url="http://localhost", timeout=10
        )

    def wait_socket(self) -> Vmm:
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None, f"exited early: {self.output}"
            assert time.monotonic() < deadline, "no API socket"
            time.sleep(0.005)
        return self

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"{text!r} never appeared in {self.output!r}"
            time.sleep(0.01)

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def spawn(backend: str, tmp_path: Path) -> Iterator[object]:
    started: list[Vmm] = []

    def start(*flags: str, api: bool = True, wait: bool = True) -> Vmm:
        workdir = tmp_path / f"vmm{len(started)}"
        workdir.mkdir()
        vmm = Vmm(backend, workdir, *flags, api=api)
        started.append(vmm)
        return vmm.wait_socket() if api and wait else vmm

    yield start
    for vmm in started:
        vmm.close()


def fault(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return str(response.json()["fault_message"])


def boot(vmm: Vmm, kernel: str, boot_args: str, mem_mib: int = 128, **machine: object) -> None:
    r = vmm.client.put("/boot-source", json={"kernel_image_path": kernel, "boot_args": boot_args})
    assert r.status_code == 204, r.text
    r = vmm.client.put(
        "/machine-config", json={"vcpu_count": 1, "mem_size_mib": mem_mib, **machine}
    )
    assert r.status_code == 204, r.text
    r = vmm.client.put("/actions", json={"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text


def test_instance_info_before_boot(spawn):  # type: ignore[no-untyped-def]
    vmm = spawn("--id", "emu-test-1")
    r = vmm.client.get("/")
    assert r.status_code == 200
    info = r.json()
    assert info["id"] == "emu-test-1"
    assert info["state"] == "Not started"
    assert info["app_name"] == "Firecracker"
    assert info["vmm_version"].startswith(f"1.{MINOR}.")
    assert r.headers["server"] == "Firecracker API"
    assert vmm.client.get("/version").json()["firecracker_version"] == info["vmm_version"]


def test_unknown_path_method_and_fields(spawn):  # type: ignore[no-untyped-def]
    vmm = spawn()
    assert fault(vmm.client.get("/nope")) == "Invalid request method and/or path: GET nope."
    assert fault(vmm.client.put("/drives", json={})) == "The ID cannot be empty."
    msg = fault(vmm.client.put("/boot-source", content=b'{"kernel_image_path": "/k", "bogus": 1}'))
    assert msg == (
        "An error occurred when deserializing the json body of a request: unknown field `bogus`, "
        "expected one of `kernel_image_path`, `initrd_path`, `boot_args` at line 1 column 35."
    )
    msg = fault(
        vmm.client.put("/machine-config", content=b'{"vcpu_count": "1", "mem_size_mib": 128}')
    )
    assert msg.endswith('invalid type: string "1", expected u8 at line 1 column 18.')
    msg = fault(vmm.client.put("/actions", content=b'{"action_type": "Bogus"}'))
    assert "unknown variant `Bogus`, expected one of `FlushMetrics`, `InstanceStart`" in msg


def test_preboot_rules(spawn):  # type: ignore[no-untyped-def]
    vmm = spawn()
    assert fault(vmm.client.patch("/vm", json={"state": "Paused"})) == PREBOOT_ONLY
    assert fault(vmm.client.put("/actions", json={"action_type": "FlushMetrics"})) == PREBOOT_ONLY
    assert (
        fault(
            vmm.client.put("/snapshot/create", json={"snapshot_path": "/s", "mem_file_path": "/m"})
        )
        == PREBOOT_ONLY
    )
    msg = fault(vmm.client.put("/actions", json={"action_type": "InstanceStart"}))
    assert msg.endswith("Cannot start microvm without kernel configuration.")
    msg = fault(vmm.client.put("/boot-source", json={"kernel_image_path": "/nonexistent/k"}))
    assert msg.endswith("The kernel file cannot be opened: No such file or directory (os error 2)")
    assert vmm.client.get("/").json()["state"] == "Not started"


def test_boot_guest_output_and_state_transitions(spawn, kernel):  # type: ignore[no-untyped-def]
    vmm = spawn(*QUIET)
    boot(vmm, kernel, "console=ttyS0 firec.echo=hello firec.echo=world")
    vmm.wait_output("firec-guest: echo world\n")
    lines = [ln for ln in vmm.output.splitlines() if ln.startswith("firec-guest")]
    assert lines == ["firec-guest: booted", "firec-guest: echo hello", "firec-guest: echo world"]
    assert vmm.client.get("/").json()["state"] == "Running"
    assert vmm.client.patch("/vm", json={"state": "Paused"}).status_code == 204
    assert vmm.client.get("/").json()["state"] == "Paused"
    assert vmm.client.patch("/vm", json={"state": "Paused"}).status_code == 204
    assert vmm.client.patch("/vm", json={"state": "Resumed"}).status_code == 204
    assert vmm.client.get("/").json()["state"] == "Running"
    assert (
        fault(vmm.client.put("/boot-source", json={"kernel_image_path": kernel})) == POSTBOOT_ONLY
    )
    assert fault(vmm.client.put("/actions", json={"action_type": "InstanceStart"})) == POSTBOOT_ONLY
    assert fault(vmm.client.patch("/machine-config", json={"vcpu_count": 1})) == POSTBOOT_ONLY
    assert vmm.client.put("/actions", json={"action_type": "SendCtrlAltDel"}).status_code == 204
    assert vmm.client.put("/actions", json={"action_type": "FlushMetrics"}).status_code == 204
    config = vmm.client.get("/vm/config").json()
    assert config["boot-source"]["kernel_image_path"] == kernel
    assert config["machine-config"]["mem_size_mib"] == 128
    assert vmm.proc.poll() is None


def test_guest_exit_stops_firecracker_with_status_0(spawn, kernel):  # type: ignore[no-untyped-def]
    vmm = spawn(*QUIET)
    boot(vmm, kernel, "firec.echo=bye firec.exit")
    assert vmm.proc.wait(10) == 0, vmm.output
    assert "firec-guest: echo bye\n" in vmm.output
    assert os.path.exists(vmm.sock), "Firecracker leaves its socket file behind"
    vmm = spawn()
    boot(vmm, kernel, "firec.exit")
    assert vmm.proc.wait(10) == 0, vmm.output
    if MODERN:
        assert vmm.output.rstrip().endswith("Firecracker exiting successfully. exit_code=0")


def test_sigterm_kills_and_keeps_the_socket(spawn, kernel):  # type: ignore[no-untyped-def]
    vmm = spawn()
    boot(vmm, kernel, "")
    vmm.proc.send_signal(signal.SIGTERM)
    assert vmm.proc.wait(10) == -signal.SIGTERM
    assert os.path.exists(vmm.sock)


def test_post_boot_updates(spawn, kernel, tmp_path):  # type: ignore[no-untyped-def]
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    vmm = spawn()
    r = vmm.client.put(
        "/drives/data",
        json={
            "drive_id": "data",
            "path_on_host": str(disk),
            "is_root_device": False,
            "is_read_only": False,
        },
    )
    assert r.status_code == 204, r.text
    boot(vmm, kernel, "")
    r = vmm.client.patch("/drives/data", json={"drive_id": "data", "path_on_host": str(disk)})
    assert r.status_code == 204, r.text
    msg = fault(
        vmm.client.patch("/drives/nope", json={"drive_id": "nope", "path_on_host": str(disk)})
    )
    # each release words it its own way (1.14: "...couldn't be found", 1.4: "Failed to find
    # the device on the bus", 1.0: "Device not found")
    assert any(
        text in msg
        for text in ("the device couldn't be found", "find the device", "Device not found")
    ), msg
    msg = fault(
        vmm.client.put(
            "/drives/more",
            json={
                "drive_id": "more",
                "path_on_host": str(disk),
                "is_root_device": False,
                "is_read_only": False,
            },
        )
    )
    assert msg in (POSTBOOT_ONLY, "PCI is not enabled")


def test_snapshot_create_needs_pause(spawn, kernel, tmp_path):  # type: ignore[no-untyped-def]
    vmm = spawn()
    boot(vmm, kernel, "", mem_mib=64)
    body = {"snapshot_path": str(tmp_path / "state"), "mem_file_path": str(tmp_path / "mem")}
    assert "save/restore unavailable while running" in fault(
        vmm.client.put("/snapshot/create", json=body)
    )
    assert vmm.client.patch("/vm", json={"state": "Paused"}).status_code == 204
    r = vmm.client.put("/snapshot/create", json=body)
    assert r.status_code == 204, r.text
    assert (tmp_path / "mem").stat().st_size == 64 << 20
    assert (tmp_path / "state").stat().st_size > 0
    assert fault(vmm.client.put("/snapshot/load", json=body)) == POSTBOOT_ONLY


def test_http_level_errors(spawn):  # type: ignore[no-untyped-def]
    vmm = spawn()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(vmm.sock)
        s.sendall(b"POST / HTTP/1.1\r\n\r\n")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400 \r\nServer: Firecracker API\r\n")
    assert b"Invalid HTTP Method: Unsupported HTTP method." in data
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(vmm.sock)
        s.sendall(b"GET /version HTTP/1.1\r\n\r\nGET /version HTTP/1.1\r\n\r\n")
        time.sleep(0.3)
        data = s.recv(8192)
    assert data.count(b"HTTP/1.1 200 \r\n") == 2, "keep-alive, pipelined requests answered in order"


def test_bad_flag_and_version(spawn):  # type: ignore[no-untyped-def]
    vmm = spawn("--bogus", api=False)
    assert vmm.proc.wait(10) == 153
    assert "Found argument 'bogus' which wasn't expected" in vmm.output
    vmm = spawn("--version", api=False)
    assert vmm.proc.wait(10) == 0, vmm.output
    assert vmm.out.read_text().startswith(f"Firecracker v1.{MINOR}.")


def test_config_file_boot(spawn, kernel, tmp_path):  # type: ignore[no-untyped-def]
    good = tmp_path / "good.json"
    cfg = {
        "boot-source": {"kernel_image_path": kernel, "boot_args": "firec.echo=cfg firec.exit"},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    }
    good.write_text(json.dumps(cfg))
    vmm = spawn("--no-api", "--config-file", str(good), *QUIET, api=False)
    assert vmm.proc.wait(10) == 0, vmm.output
    assert "firec-guest: echo cfg\n" in vmm.output
    del cfg["drives"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    vmm = spawn("--no-api", "--config-file", str(bad), api=False)
    assert vmm.proc.wait(10) == (1 if MODERN else 152)
    assert "missing field `drives`" in vmm.output
    vmm = spawn("--no-api", api=False)
    assert vmm.proc.wait(10) == 153
    assert "Argument 'config-file' required, but not found." in vmm.output


def test_config_file_with_api_boots_and_serves(spawn, kernel, tmp_path):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"boot-source": {"kernel_image_path": kernel}, "drives": []}))
    vmm = spawn("--config-file", str(cfg))
    vmm.wait_output("firec-guest: booted\n")
    deadline = time.monotonic() + 5
    while vmm.client.get("/").json()["state"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_socket_in_use_is_refused(spawn, tmp_path):  # type: ignore[no-untyped-def]
    first = spawn()
    second = spawn("--api-sock", first.sock, api=False)
    assert second.proc.wait(10) != 0
    assert first.client.get("/").status_code == 200


def _first_response(sock_path: str, body: bytes) -> tuple[int, bytes]:
    """PUT /mmds with ``body`` on a new connection: the status and body of the first answer."""
    head = b"PUT /mmds HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(head % len(body) + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        top, _, rest = data.partition(b"\r\n\r\n")
        match = re.search(rb"Content-Length: (\d+)", top)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            rest += s.recv(65536)
    return int(top.split(b" ")[1]), rest[:length]


@pytest.mark.parametrize("limit", [None, 1000])
def test_payload_limit(spawn, limit):  # type: ignore[no-untyped-def]
    """51,200 bytes unless --http-api-max-payload-size says otherwise; over it a non-JSON 400."""
    biggest = limit or 51200
    flags = ["--http-api-max-payload-size", str(limit)] if limit else []
    for size, expected in ((biggest, 204), (biggest + 1, 400)):
        vmm = spawn(*flags)
        body = json.dumps({"k": "x" * (size - len('{"k": ""}'))}).encode()
        assert len(body) == size
        status, answer = _first_response(vmm.sock, body)
        assert status == expected, answer
        if expected == 400:
            text = answer.decode()
            assert (
                f"Request payload with size {size} is larger than the limit of {biggest} "
                "allowed by server." in text
            )
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)  # micro_http's own answer: a raw newline in a string
