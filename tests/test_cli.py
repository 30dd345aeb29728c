"""The ``firec`` command line in-process (typer's CliRunner): options, errors, exit codes.

The life of VMs across processes (``run -d``, ``gc`` after a ``kill -9``...)
is in ``test_cli_lifecycle.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

import firec
from firec.cli import app, main
from firec.cli.output import ExitCode
from firec.host.registry import ProcessRef, Registry, VmRecord
from firec.testing import emulator_binary

runner = CliRunner()


@pytest.fixture
def env(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private state directory, and no Firecracker to be found unless a test says so."""
    values = {
        "FIREC_STATE_DIR": str(short_tmp / "state"),
        "XDG_DATA_HOME": str(short_tmp / "data"),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FIRECRACKER_BIN", raising=False)
    monkeypatch.delenv("JAILER_BIN", raising=False)
    if shutil.which("firecracker"):
        pytest.skip(
            f"a firecracker is installed ({shutil.which('firecracker')}): nothing is missing"
        )
    return values


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- help, version, exit codes -------------------------------------------------------------


def test_help_lists_the_commands_and_the_exit_codes(env: dict[str, str]) -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in (
        "run", "ls", "inspect", "stop", "kill", "pause", "resume", "snapshot", "restore",
        "clone", "console", "logs", "metrics", "rm", "gc", "doctor", "install", "image",
        "kernel", "version",
    ):  # fmt: skip
        assert f" {command} " in out, command
    assert "4 no such microVM" in " ".join(out.split())


@pytest.mark.parametrize(
    "command",
    [
        *(c.name for c in app.registered_commands),
        "image build",
        "kernel extract",
        "kernel fetch",
    ],
)
def test_every_command_has_help(env: dict[str, str], command: str | None) -> None:
    assert command is not None
    code, out, err = invoke(*command.split(), "--help")
    assert code == 0, err
    assert "Usage: firec" in out and "Exit status" in out


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert main(["run", "--no-such-option"]) == ExitCode.USAGE
    assert main(["no-such-command"]) == ExitCode.USAGE


def test_version(env: dict[str, str]) -> None:
    code, out, _ = invoke("version", "--json")
    data = json.loads(out)
    assert code == 0 and data["firec"] == "0.1.0"
    assert data["api_versions"] == ["1.0.0", "1.16.1"]
    assert data["firecracker"]["ok"] is False
    assert "not found" in data["firecracker"]["detail"]


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_says_what_is_missing_and_exits_3(env: dict[str, str]) -> None:
    code, out, _ = invoke("doctor", "--json")
    assert code == ExitCode.HOST_NOT_READY
    report = json.loads(out)
    assert report["ready"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) >= {"kvm", "firecracker", "jailer", "cgroups", "tun", "nft", "cni"}
    assert checks["firecracker"]["ok"] is False and checks["firecracker"]["required"] is True
    assert "firec install" in checks["firecracker"]["fix"]
    code, out, _ = invoke("doctor")
    assert code == ExitCode.HOST_NOT_READY
    assert "not ready" in out and "firecracker" in out and "firec install" in out


def test_doctor_is_happy_once_firecracker_is_there(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from firec.host import checks as host

    monkeypatch.setenv("FIRECRACKER_BIN", str(emulator_binary()))
    if not host.check_kvm().ok:
        pytest.skip(f"this host has no usable KVM: {host.check_kvm().detail}")
    code, out, _ = invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["firecracker"]["ok"] is True
    assert code == 0 and json.loads(out)["ready"] is True


# -- run: refusals before anything is made ---------------------------------------------------


def test_run_without_firecracker_says_what_is_missing(env: dict[str, str]) -> None:
    code, _, err = invoke("run", "--test-guest")
    assert code == ExitCode.HOST_NOT_READY
    assert "firecracker" in err and "firec install" in err and "firec doctor" in err
    assert Registry(env["FIREC_STATE_DIR"]).records() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "either a KERNEL or --test-guest"),
        (["--test-guest", "/boot/vmlinux"], "either a KERNEL or --test-guest"),
        (["/no/such/kernel"], "/no/such/kernel does not exist"),
        (["--test-guest", "--memory", "12X"], "size"),
        (["--test-guest", "--drive", "path=/x,rw"], "unknown part 'rw'"),
        (["--test-guest", "--drive", "/no/such/disk"], "/no/such/disk does not exist"),
        (["--test-guest", "--net", "wifi"], "use none, tap:NAME"),
        (["--test-guest", "--publish", "8080:80"], "routed eth0"),
        (["--test-guest", "--vsock", "x"], "use CID or CID:PATH"),
        (["--test-guest", "--id", "bad_id"], "not a valid id"),
        (["--test-guest", "--cpus", "0"], "greater than or equal to 1"),
    ],
)
def test_run_refuses_bad_options(
    env: dict[str, str], short_tmp: Path, args: list[str], message: str
) -> None:
    code, out, err = invoke(
        "run", "--firecracker-bin", str(emulator_binary()), "--workdir", str(short_tmp), *args
    )
    assert code == ExitCode.USAGE, out + err
    assert message in " ".join((out + err).split())
    assert Registry(env["FIREC_STATE_DIR"]).records() == []
    assert [p.name for p in short_tmp.iterdir() if p.name != "state"] == []  # no VM directory


# -- managing VMs that are not there, or not running ------------------------------------------


def test_unknown_and_ambiguous_ids(env: dict[str, str], short_tmp: Path) -> None:
    for command in ("inspect", "stop", "pause", "resume", "rm", "kill", "logs", "console"):
        code, _, err = invoke(command, "nope")
        assert code == ExitCode.NO_SUCH_VM, (command, err)
        assert "no microVM 'nope'" in err
    registry = Registry(env["FIREC_STATE_DIR"])
    config = _config(short_tmp)
    for vm_id in ("abc1", "abc2"):
        registry.create(VmRecord.new(config.replace(vm_id=vm_id), detached=True))
    code, _, err = invoke("inspect", "abc")
    assert code == ExitCode.USAGE and "abc1, abc2" in err


def _config(short_tmp: Path) -> firec.Config:
    return firec.Config(vm_id="x", kernel_image=short_tmp, workdir=short_tmp / "vms")


def test_a_vm_whose_controller_crashed_while_starting(env: dict[str, str], short_tmp: Path) -> None:
    """A record left by a controller killed before its VMM ran: exited, and gc reaps it."""
    registry = Registry(env["FIREC_STATE_DIR"])
    helper = subprocess.Popen(["true"])
    helper.wait()
    vm_dir = short_tmp / "vms" / "crashed"
    vm_dir.mkdir(parents=True)
    record = VmRecord.new(_config(short_tmp).replace(vm_id="crashed"), detached=True)
    record = record.replace(
        controller=ProcessRef(helper.pid, 1, "gone"), vm_dir=str(vm_dir), socket=str(vm_dir / "s")
    )
    registry.create(record)
    code, out, _ = invoke("ls", "--json")
    assert code == 0 and json.loads(out)[0]["state"] == "exited"
    assert invoke("pause", "crashed")[0] == ExitCode.WRONG_STATE
    assert invoke("metrics", "crashed")[0] == ExitCode.WRONG_STATE
    code, out, _ = invoke("gc", "--dry-run", "--json")
    assert code == 0 and json.loads(out) == [
        {"id": "crashed", "reason": "it never started", "done": []}
    ]
    assert vm_dir.exists()
    code, out, _ = invoke("gc", "--json")
    assert code == 0 and json.loads(out)[0]["done"] == ["removed its files", "forgot it"]
    assert not vm_dir.exists() and registry.records() == []
    code, _, err = invoke("gc")
    assert code == 0 and "nothing to reap" in err


def _network_record(state_dir: Path, vm_id: str, *, by_a_dead_process: bool = True) -> Path:
    """The record the SDK's network set-up writes first, by a process that then exits."""
    from firec.network.record import NetworkRecord, record_path

    if by_a_dead_process:
        code = (
            "import sys\n"
            "from firec.network.record import NetworkRecord, record_path\n"
            "NetworkRecord.create(record_path(sys.argv[1], sys.argv[2]), sys.argv[2], None)\n"
        )
        subprocess.run([sys.executable, "-c", code, str(state_dir), vm_id], check=True)
    else:
        NetworkRecord.create(record_path(state_dir, vm_id), vm_id, None)
    return record_path(state_dir, vm_id)


def test_gc_looks_for_orphan_networks_where_the_sdk_keeps_them(
    env: dict[str, str], short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only in the registry's network/: SDK VMs keep theirs in _statedirs.network_dir()."""
    from firec import _statedirs

    sdk = short_tmp / "var-lib-firec"  # stands in for /var/lib/firec
    default = Registry(short_tmp / "run-firec-state")  # and for /run/firec/state
    monkeypatch.setattr(_statedirs, "network_dir", lambda: sdk)
    monkeypatch.setattr(_statedirs, "default_registry_dir", lambda: default.root)
    orphan = _network_record(sdk, "sdk-orphan")
    in_use = _network_record(sdk, "sdk-alive", by_a_dead_process=False)  # its program runs
    detached = _network_record(sdk, "detached")  # a detached `firec run` without --state-dir
    default.create(VmRecord.new(_config(short_tmp).replace(vm_id="detached"), detached=True))
    cli = _network_record(Path(env["FIREC_STATE_DIR"]) / "network", "cli-orphan")
    code, out, _ = invoke("gc", "--json")
    assert code == 0, out
    assert sorted((e["id"], e["done"]) for e in json.loads(out)) == [
        ("cli-orphan", ["tore its network down"]),
        ("sdk-orphan", ["tore its network down"]),
    ]
    assert not orphan.exists() and not cli.exists()
    assert in_use.exists() and detached.exists()


def test_ls_of_nothing(env: dict[str, str]) -> None:
    assert invoke("ls", "--json")[:2] == (0, "[]\n")
    code, out, _ = invoke("ls", "-q")
    assert (code, out) == (0, "")


# -- images ------------------------------------------------------------------------------------


def test_image_build_makes_an_ext4_image(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "root"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "hostname").write_text("guest\n")
    image = tmp_path / "rootfs.ext4"
    code, out, err = invoke(
        "image", "build", str(source), str(image), "--label", "root", "--no-agent"
    )
    assert code == 0, err
    assert str(image) in out
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listing = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", str(image)], capture_output=True, text=True
    )
    assert listing.stdout == "guest\n"


def test_image_build_refuses_a_size_too_small(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "root"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(2 << 20))
    code, _, err = invoke(
        "image", "build", str(source), str(tmp_path / "i.ext4"), "--size", "1M", "--no-agent"
    )
    assert code == ExitCode.USAGE and "size" in err
    assert not (tmp_path / "i.ext4").exists()


def test_kernel_extract_refuses_what_is_not_a_kernel(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "vmlinuz"
    junk.write_bytes(b"not a kernel" * 100)
    code, _, err = invoke("kernel", "extract", str(junk), str(tmp_path / "vmlinux"))
    assert code == ExitCode.ERROR and "vmlinuz" in err
    assert not (tmp_path / "vmlinux").exists()


def test_kernel_extract_accepts_an_elf_vmlinux(
    env: dict[str, str], tmp_path: Path, guest_kernel: Path
) -> None:
    code, out, err = invoke("kernel", "extract", str(guest_kernel), str(tmp_path / "vmlinux"))
    assert code == 0, err
    assert str(tmp_path / "vmlinux") in out
    assert (tmp_path / "vmlinux").read_bytes() == guest_kernel.read_bytes()


# -- install -----------------------------------------------------------------------------------

VERSION = "v1.14.2"


def _release(arch: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for tool in ("firecracker", "jailer"):
            script = f"#!/bin/sh\necho '{tool.title()} {VERSION}'\n".encode()
            info = tarfile.TarInfo(f"release-{VERSION}-{arch}/{tool}-{VERSION}-{arch}")
            info.size, info.mode = len(script), 0o755
            tar.addfile(info, io.BytesIO(script))
    return buf.getvalue()


@pytest.fixture
def release_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    routes: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def _publish(routes: dict[str, bytes], checksum: str | None = None) -> None:
    from firec.host.install import normalize_arch

    arch = normalize_arch()
    name = f"firecracker-{VERSION}-{arch}.tgz"
    archive = _release(arch)
    routes[f"/{VERSION}/{name}"] = archive
    digest = checksum or hashlib.sha256(archive).hexdigest()
    routes[f"/{VERSION}/{name}.sha256.txt"] = f"{digest}  {name}\n".encode()


def test_install_verifies_and_installs(
    env: dict[str, str], release_server: tuple[str, dict[str, bytes]], short_tmp: Path
) -> None:
    base_url, routes = release_server
    _publish(routes)
    code, out, err = invoke("install", "--base-url", base_url, "--json")
    assert code == 0, err
    installed = json.loads(out)
    assert installed["version"] == VERSION
    assert Path(installed["firecracker"]).is_relative_to(short_tmp / "data")
    assert os.access(installed["firecracker"], os.X_OK)


def test_install_refuses_a_bad_checksum_and_leaves_nothing(
    env: dict[str, str], release_server: tuple[str, dict[str, bytes]], short_tmp: Path
) -> None:
    base_url, routes = release_server
    _publish(routes, checksum="0" * 64)
    code, _, err = invoke("install", "--base-url", base_url)
    assert code == ExitCode.ERROR
    assert "checksum mismatch" in err and "Nothing was installed" in " ".join(err.split())
    bin_dir = short_tmp / "data" / "firec" / "bin"
    assert not bin_dir.exists() or list(bin_dir.iterdir()) == []


def test_install_offline_is_a_clear_error(env: dict[str, str]) -> None:
    code, _, err = invoke("install", "--base-url", "http://127.0.0.1:9")
    assert code == ExitCode.ERROR
    assert "cannot reach 127.0.0.1" in err and "offline" in err


def test_run_names_every_missing_piece_kvm_too(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from firec.host import checks as host

    no_kvm = host.Check("kvm", False, "/dev/kvm does not exist", "load KVM (modprobe kvm_intel)")
    monkeypatch.setattr(host, "check_kvm", lambda: no_kvm)
    code, _, err = invoke("run", "--test-guest")
    assert code == ExitCode.HOST_NOT_READY
    text = " ".join(err.split())
    assert "kvm: /dev/kvm does not exist" in text and "modprobe kvm_intel" in text
    assert "firecracker: not found" in text and "firec install" in text


def test_metrics_rates_are_counts_since_the_previous_write() -> None:
    from rich.console import Console

    from firec.cli.follow import metrics_table
    from firec.vm.metrics import parse_metrics_line

    first = parse_metrics_line('{"utc_timestamp_ms": 1000, "vcpu": {"exit_io_out": 50}}')
    second = parse_metrics_line(
        '{"utc_timestamp_ms": 3000, "vcpu": {"exit_io_out": 10, "exit_io_in": 0},'
        ' "latencies_us": {"pause_vm": 40}}'
    )
    console = Console(width=200, record=True)
    console.print(metrics_table(second, first, everything=False))
    rows = [line.split() for line in console.export_text().splitlines()]
    assert ["vcpu", "exit_io_out", "10", "5.0"] in rows  # 10 in 2 seconds
    assert ["latencies_us", "pause_vm", "40"] in rows  # a time: no rate
    assert not any("exit_io_in" in row for row in rows)  # zero: hidden without --all
    console.print(metrics_table(second, None, everything=True))
    assert "exit_io_in" in console.export_text()
