"""Emulator-only checks: per-version refusals, snapshots, logs, metrics, serde messages.

The expected texts were measured on real Firecracker 1.14.2 and 1.0.0 (see
tests/test_emulator.py for the tests that run against both).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from firec.errors import MachineError
from firec.testing import Emulator
from firec.testing.emulator._release import parse_release
from firec.testing.emulator._schema import schema
from firec.testing.emulator._serde import SerdeError, from_text
from firec.testing.guest import build_test_guest
from tests import host_tools


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> str:
    host_tools.require("cc")
    return str(build_test_guest(tmp_path_factory.mktemp("guest")))


def client(emu: Emulator) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=emu.socket_path), base_url="http://localhost", timeout=10
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "firec.testing.emulator", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("version", "body", "message"),
    [
        ("1.14", '{"vcpu_count": 2}', "missing field `mem_size_mib` at line 1 column 17"),
        (
            "1.0",
            '{"vcpu_count": 0, "mem_size_mib": 128}',
            "invalid value: vcpu_num, expected number of vCPUs should be larger than 0 at line 1 "
            "column 16",
        ),
        (
            "1.14",
            '{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"X"}',
            "unknown variant `X`, expected `None` or `2M` at line 1 column 51",
        ),
        (
            "1.0",
            '{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"2M"}',
            "unknown field `huge_pages`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, "
            "`cpu_template`, `track_dirty_pages` at line 1 column 47",
        ),
        (
            "1.14",
            "[]",
            "invalid length 0, expected struct MachineConfig with 6 elements at line 1 column 2",
        ),
        (
            "1.0",
            "[]",
            "invalid length 0, expected struct VmConfig with 5 elements at line 1 column 2",
        ),
        (
            "1.14",
            '{"vcpu_count":[],"mem_size_mib":1}',
            "invalid type: sequence, expected u8 at line 1 column 14",
        ),
    ],
)
def test_machine_config_serde_messages(version: str, body: str, message: str) -> None:
    with pytest.raises(SerdeError) as info:
        from_text(body, schema(parse_release(version)).machine_config)
    assert info.value.render(body) == message


def test_positions_of_custom_errors() -> None:
    s = schema(parse_release("1.14"))
    body = '{"iface_id":"a","host_dev_name":"t","guest_mac":"zz:zz"}'
    with pytest.raises(SerdeError) as info:
        from_text(body, s.net)
    assert info.value.render(body) == "The provided MAC address is invalid. at line 1 column 56"
    body = '{"network_interfaces":["a"],"ipv4_address":"300.1.1.1"}'
    with pytest.raises(SerdeError) as info:
        from_text(body, s.mmds_config)
    assert info.value.render(body) == "invalid IPv4 address syntax at line 1 column 54"


def test_version_specific_endpoints_and_flags(tmp_path: Path) -> None:
    with Emulator("1.0") as old, Emulator("1.14") as new:
        body = {"id": "p0", "path_on_host": "/nonexistent"}
        r = client(old).put("/pmem/p0", json=body)
        assert r.json() == {"fault_message": "Invalid request method and/or path: PUT pmem."}
        r = client(new).put("/pmem/p0", json=body)
        assert r.json()["fault_message"].startswith("Pmem device error: Unable to create")
    result = run("--emulate-version", "1.0", "--metrics-path", str(tmp_path / "m"))
    assert result.returncode == 153
    assert "Found argument 'metrics-path' which wasn't expected" in result.stderr
    assert "--enable-pci" in run("--emulate-version", "1.16", "--help").stdout
    assert "--enable-pci" not in run("--emulate-version", "1.12", "--help").stdout
    out = run("--emulate-version", "1.14", "--snapshot-version").stdout.splitlines()
    assert out[0] == "v8.0.0"  # then the exit log line, on stdout as in Firecracker


def test_version_selection_by_environment() -> None:
    env = dict(os.environ, FIREC_EMULATOR_VERSION="1.7")
    out = subprocess.run(
        [sys.executable, "-m", "firec.testing.emulator", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )
    assert out.stdout.startswith("Firecracker v1.7.0\n\n")
    assert run("--emulate-version", "2.0", "--version").returncode == 153


def test_snapshot_round_trip(kernel: str, tmp_path: Path) -> None:
    state, mem = tmp_path / "state", tmp_path / "mem"
    with Emulator("1.14") as src:
        c = client(src)
        assert c.put("/boot-source", json={"kernel_image_path": kernel}).status_code == 204
        mc = {"vcpu_count": 2, "mem_size_mib": 32, "track_dirty_pages": True}
        assert c.put("/machine-config", json=mc).status_code == 204
        assert c.put("/mmds", json={"k": "v"}).status_code == 204
        assert c.put("/actions", json={"action_type": "InstanceStart"}).status_code == 204
        assert c.patch("/vm", json={"state": "Paused"}).status_code == 204
        body = {"snapshot_path": str(state), "mem_file_path": str(mem), "snapshot_type": "Diff"}
        assert c.put("/snapshot/create", json=body).status_code == 204
    assert mem.stat().st_size == 32 << 20
    described = run("--emulate-version", "1.14", "--describe-snapshot", str(state))
    assert described.stdout.splitlines()[0] == "v8.0.0"
    with Emulator("1.14") as dst:
        c = client(dst)
        body = {
            "snapshot_path": str(state),
            "mem_backend": {"backend_path": str(mem), "backend_type": "File"},
            "resume_vm": True,
        }
        r = c.put("/snapshot/load", json=body)
        assert r.status_code == 204, r.text
        assert c.get("/").json()["state"] == "Running"
        assert c.get("/machine-config").json()["vcpu_count"] == 2
        assert c.get("/mmds").json() == {"k": "v"}
    with Emulator("1.14") as bad:
        r = client(bad).put(
            "/snapshot/load", json={"snapshot_path": str(state), "mem_file_path": str(state)}
        )
        assert r.status_code == 400
        assert r.json()["fault_message"].startswith("Load snapshot error: Failed to restore")
        assert r.headers["deprecation"] == "true"
        assert bad.wait(10) == 1, "a failed restore ends Firecracker"


def test_log_and_metrics_formats(kernel: str, tmp_path: Path) -> None:
    log, metrics = tmp_path / "fc.log", tmp_path / "fc.metrics"
    os.mkfifo(metrics)
    reader = os.open(metrics, os.O_RDONLY | os.O_NONBLOCK)
    try:
        args = [
            "--log-path",
            str(log),
            "--level",
            "Info",
            "--show-level",
            "--show-log-origin",
            "--metrics-path",
            str(metrics),
        ]
        with Emulator("1.16", args=args) as emu:
            c = client(emu)
            c.put("/boot-source", json={"kernel_image_path": kernel})
            c.put("/actions", json={"action_type": "InstanceStart"})
            assert c.put("/actions", json={"action_type": "FlushMetrics"}).status_code == 204
        lines = log.read_text().splitlines()
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} "
            r"\[anonymous-instance:main:INFO:src/[\w/]+\.rs:\d+\] Running Firecracker v1\.16\.1",
            lines[0],
        )
        assert any("[anonymous-instance:fc_api:INFO:" in ln and "/actions" in ln for ln in lines)
        records = [json.loads(ln) for ln in os.read(reader, 1 << 20).decode().splitlines()]
    finally:
        os.close(reader)
    assert len(records) == 2, "one line at boot, one per FlushMetrics"
    for key in ("utc_timestamp_ms", "api_server", "block", "net", "vcpu", "vmm", "uart"):
        assert key in records[1]
    assert records[0]["put_api_requests"]["actions_count"] == 1
    assert records[1]["put_api_requests"]["actions_count"] == 1, "counters restart after a flush"


def test_mmds_size_limit() -> None:
    with Emulator("1.14", args=["--mmds-size-limit", "150"]) as emu:
        c = client(emu)
        assert c.put("/mmds", json={"a": "x" * 100}).status_code == 204
        r = c.patch("/mmds", json={"b": "y" * 100})
        assert r.status_code == 413
        assert r.json() == {
            "fault_message": "MMDS limit exceeded error: The MMDS patch request doesn't fit."
        }
        assert c.get("/mmds").json() == {"a": "x" * 100}


def test_emulator_start_failure_is_reported_and_cleaned_up() -> None:
    emu = Emulator("1.14", args=["--bogus"])
    with pytest.raises(MachineError) as info:
        emu.start()
    assert info.value.exit_code == 153
    assert any("Found argument 'bogus'" in line for line in info.value.log_tail)
    assert not emu.workdir.exists()


def test_emulator_context_manager_cleans_up() -> None:
    with Emulator() as emu:
        assert client(emu).get("/version").json() == {"firecracker_version": "1.16.1"}
        proc = emu.process
    assert proc is not None and proc.poll() is not None
    assert not os.path.exists(emu.socket_path)


def _threads(pid: int) -> list[str]:
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def _boot_args(kernel: str, *tokens: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("/boot-source", {"kernel_image_path": kernel, "boot_args": " ".join(tokens)}),
        ("/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]


def test_a_request_read_as_the_vmm_stops_hangs_it_for_good(kernel: str) -> None:
    """Firecracker 1.0-1.14's shutdown deadlock, reproduced (and its vCPU threads)."""
    with Emulator(args=["--emulate-slow-stop", "0.5"]) as emu, client(emu) as api:
        for path, body in _boot_args(kernel, "console=ttyS0"):
            assert api.put(path, json=body).status_code == 204
        assert emu.process is not None
        pid = emu.process.pid
        assert sorted(n for n in _threads(pid) if n.startswith("fc_")) == [
            "fc_api",
            "fc_vcpu 0",
            "fc_vcpu 1",
        ]
        assert api.patch("/vm", json={"state": "Paused"}).status_code == 204
        assert "fc_vcpu 1" in _threads(pid)  # paused vCPUs keep their threads
    with Emulator(args=["--emulate-slow-stop", "0.5"]) as emu, client(emu) as api:
        for path, body in _boot_args(kernel, "console=ttyS0", "firec.exit"):
            api.put(path, json=body)
        deadline = time.monotonic() + 5
        while "Vmm is stopping." not in emu.stdout and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "Vmm is stopping." in emu.stdout
        with pytest.raises(httpx.ReadTimeout):
            api.get("/", timeout=1.0)  # read while it stops: never answered
        assert emu.process is not None and emu.process.poll() is None  # and never exits
        threads = _threads(emu.process.pid)
        assert "fc_api" in threads and not any(n.startswith("fc_vcpu") for n in threads)


def test_a_vmm_left_alone_as_it_stops_exits_cleanly(kernel: str) -> None:
    with Emulator(args=["--emulate-slow-stop", "0.2"]) as emu, client(emu) as api:
        for path, body in _boot_args(kernel, "console=ttyS0", "firec.exit"):
            api.put(path, json=body)
        assert emu.process is not None
        assert emu.process.wait(timeout=5) == 0
        assert emu.stdout.count("Vmm is stopping.") == 2
