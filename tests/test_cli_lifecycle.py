"""The ``firec`` command end to end, in real processes, on the emulator and real Firecracker.

Every command runs as its own ``python -m firec.cli`` process, the way people
use it: a VM started with ``run -d`` outlives that process and is managed
from the next ones through the host state. Each test checks that nothing is
left afterwards: no process, socket, VM directory, jail, cgroup, namespace,
record. The ``[firecracker]`` variants run when ``FIRECRACKER_BIN`` names a
real Firecracker (``JAILER_BIN`` a real jailer for the jailed test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firec.cli.output import ExitCode
from firec.cli.vms import VmState, live_state
from firec.host.registry import Registry, VmRecord
from firec.testing.guest import BOOT_LINE
from tests import host_tools
from tests.support import fill, small_tmpfs

ECHO_LINE = "firec-guest: echo hello-from-firec"
PARKED = "console=ttyS0"  # boot args of a test guest that stays running


@dataclass
class Cli:
    """Runs ``firec`` commands in new processes, sharing one private host state."""

    env: dict[str, str]
    workdir: Path
    binary: Path

    @property
    def registry(self) -> Registry:
        return Registry(self.env["FIREC_STATE_DIR"])

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "firec.cli", *args]

    def __call__(self, *args: str, code: int = 0, timeout: float = 60) -> str:
        """Run ``firec args``, check its exit status, return its stdout."""
        result = subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result.stdout

    def fails(self, code: int, *args: str) -> str:
        """Run ``firec args``, expect exit status ``code``, return its stderr."""
        result = subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result.stderr

    def vm_args(self, *extra: str) -> list[str]:
        """``run``'s options for the test guest on this backend."""
        return [
            "--test-guest",
            "--firecracker-bin",
            str(self.binary),
            "--workdir",
            str(self.workdir),
            "--memory",
            "64",
            *extra,
        ]

    def run_detached(self, vm_id: str, *extra: str) -> VmRecord:
        assert self("run", "-d", "--id", vm_id, *self.vm_args(*extra)).strip() == vm_id
        record = self.registry.load(vm_id)
        assert record is not None
        return record

    def ls(self) -> dict[str, dict[str, Any]]:
        return {vm["id"]: vm for vm in json.loads(self("ls", "--json"))}

    def start_foreground(self, vm_id: str, *extra: str) -> subprocess.Popen[str]:
        """``firec run`` in the foreground (a parked guest), once its VM runs."""
        process = subprocess.Popen(
            self.command("run", "--id", vm_id, *self.vm_args("--boot-args", PARKED, *extra)),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: (
                (r := self.registry.load(vm_id)) is not None and live_state(r) is VmState.RUNNING
            ),
            process,
        )
        return process


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"firec exited with {process.returncode}: {out} {err}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def nothing_left(record: VmRecord) -> None:
    """Nothing of the VM survives: process, socket, files, jail, cgroups, namespace."""
    if record.vmm is not None:
        assert not record.vmm.alive(), f"VMM {record.vmm.pid} still runs"
    for path in (record.socket, record.vm_dir, record.jail, *record.cgroups, *record.files):
        assert path is None or not os.path.lexists(path), path
    if record.network is not None and record.network.netns is not None:
        assert not Path("/var/run/netns", record.network.netns).exists()


@pytest.fixture
def cli(vmm_binary: Path, short_tmp: Path) -> Iterator[Cli]:
    env = {**os.environ, "FIREC_STATE_DIR": str(short_tmp / "state")}
    runner = Cli(env, short_tmp / "vms", vmm_binary)
    try:
        yield runner
    finally:  # whatever a failed test left
        subprocess.run(
            runner.command("rm", "-f", *runner.ls()), env=env, capture_output=True, timeout=60
        )


# -- detached -----------------------------------------------------------------------------------


def test_a_detached_vm_outlives_its_command_and_is_managed_from_others(cli: Cli) -> None:
    record = cli.run_detached("vm1")
    assert record.vmm is not None and record.vmm.alive()  # `firec run -d` has exited
    assert record.controller is not None and not record.controller.alive()
    listed = cli.ls()["vm1"]
    assert (listed["state"], listed["mode"], listed["pid"]) == (
        "running",
        "detached",
        record.vmm.pid,
    )
    assert "vm1" in cli("ls") and "running" in cli("ls")
    assert cli("ls", "-q") == "vm1\n"

    console = cli("console", "vm1", "--no-follow")
    assert console.splitlines()[:2] == [BOOT_LINE, ECHO_LINE]
    assert cli("console", "vm1", "--no-follow", "--tail", "1") == ECHO_LINE + "\n"
    assert record.log is not None
    log = Path(record.log).read_text()
    assert log and cli("logs", "vm1").startswith(log)
    assert cli("logs", "vm1", "--tail", "1") == log.splitlines(keepends=True)[-1]

    assert cli("pause", "vm") == "vm1\n"  # a unique start of the id will do
    assert cli.ls()["vm1"]["state"] == "paused"
    cli.fails(ExitCode.WRONG_STATE, "rm", "vm1")
    assert cli("resume", "vm1") == "vm1\n"
    assert cli.ls()["vm1"]["state"] == "running"

    metrics = json.loads(cli("metrics", "vm1", "--json"))
    assert metrics["utc_timestamp_ms"] > 0
    assert "COUNTER" in cli("metrics", "vm1", "--once", "--all")
    inspected = json.loads(cli("inspect", "vm1"))
    assert inspected["vm_config"]["machine-config"]["mem_size_mib"] == 64
    assert inspected["record"]["socket"] == record.socket

    follower = subprocess.Popen(  # follows the console until the VM exits
        cli.command("console", "vm1"), env=cli.env, stdout=subprocess.PIPE, text=True
    )
    assert cli("stop", "vm1", "--timeout", "1") == "vm1 stopped\n"
    followed, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0 and followed.startswith(BOOT_LINE)
    assert cli.ls()["vm1"]["state"] == "exited"
    cli.fails(ExitCode.WRONG_STATE, "pause", "vm1")
    assert cli("rm", "vm1") == "vm1\n"
    assert cli.ls() == {}
    nothing_left(record)


def test_snapshot_restore_and_clone(cli: Cli, short_tmp: Path) -> None:
    original = cli.run_detached("orig")
    snap = short_tmp / "snap"
    assert cli("snapshot", "orig", str(snap)).strip() == str(snap)
    manifest = json.loads((snap / "snapshot.json").read_text())
    assert manifest["vm_id"] == "orig" and (snap / "memory").stat().st_size == 64 << 20
    assert cli.ls()["orig"]["state"] == "running"  # paused for the snapshot only
    cli.fails(ExitCode.ERROR, "snapshot", "orig", str(snap))  # not over another one

    restored = cli("restore", str(snap), "-d", "--id", "copy", "--workdir", str(cli.workdir))
    assert restored == "copy\n"
    assert cli("clone", "orig", "-d", "--id", "twin") == "twin\n"
    listed = cli.ls()
    assert {vm: listed[vm]["state"] for vm in listed} == {
        "orig": "running",
        "copy": "running",
        "twin": "running",
    }
    assert listed["twin"]["record"]["origin"] == "clone:orig"
    assert listed["copy"]["record"]["origin"] == f"snapshot:{snap}"
    assert cli("pause", "copy", "twin") == "copy\ntwin\n"

    records = cli.registry.records()
    assert cli("rm", "-f", "orig", "copy", "twin") == "orig\ncopy\ntwin\n"
    for record in records:
        nothing_left(record)
    assert original.vm_dir is not None and not Path(original.vm_dir).exists()
    assert (snap / "memory").exists()  # the snapshot the user asked for stays


def test_rm_refuses_a_running_vm_without_force(cli: Cli) -> None:
    record = cli.run_detached("busy")
    assert "stop it first" in cli.fails(ExitCode.WRONG_STATE, "rm", "busy")
    assert record.vmm is not None and record.vmm.alive()
    cli("rm", "-f", "busy")
    nothing_left(record)


def test_gc_reaps_a_vm_whose_vmm_died(cli: Cli) -> None:
    record = cli.run_detached("dies")
    keep = cli.run_detached("lives")
    assert cli("kill", "dies") == "dies\n"  # SIGKILL
    wait_for(lambda: cli.ls()["dies"]["state"] == "exited")
    reaped = json.loads(cli("gc", "--json"))
    assert reaped == [
        {"id": "dies", "reason": "its VMM exited", "done": ["removed its files", "forgot it"]}
    ]
    nothing_left(record)
    assert list(cli.ls()) == ["lives"]  # a running detached VM is left alone
    assert keep.vmm is not None and keep.vmm.alive()


# -- foreground ---------------------------------------------------------------------------------


def test_a_foreground_run_of_the_test_guest(cli: Cli) -> None:
    out = cli("run", "--id", "fg", *cli.vm_args())
    assert out.splitlines()[:2] == [BOOT_LINE, ECHO_LINE]  # the console, on our stdout
    assert cli.ls() == {}
    assert not (cli.workdir / "fg").exists()


def test_ctrl_c_stops_a_foreground_vm_and_removes_it(cli: Cli) -> None:
    process = cli.start_foreground("ctrlc", "--stop-timeout", "0.5")
    record = cli.registry.load("ctrlc")
    assert record is not None and cli.ls()["ctrlc"]["mode"] == "foreground"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert BOOT_LINE in out and "stopping microVM ctrlc" in err
    assert cli.ls() == {}
    nothing_left(record)


def test_gc_after_kill_9_of_the_controller(cli: Cli) -> None:
    process = cli.start_foreground("orphan")
    record = cli.registry.load("orphan")
    assert record is not None and record.vmm is not None
    process.kill()  # SIGKILL: the controller cannot clean up
    process.wait(timeout=30)  # (its VMM still holds the console pipe: no communicate)
    assert record.vmm.alive()  # its VMM runs on, in its own session
    listed = cli.ls()["orphan"]
    assert (listed["state"], listed["mode"]) == ("running", "orphaned")
    assert json.loads(cli("gc", "--dry-run", "--json"))[0]["done"] == []
    assert record.vmm.alive()
    reaped = json.loads(cli("gc", "--json"))
    assert [(r["id"], r["done"][0]) for r in reaped] == [("orphan", "killed the VMM")]
    assert "controller" in reaped[0]["reason"]
    assert cli.ls() == {}
    nothing_left(record)


def test_a_vm_that_does_not_boot_leaves_nothing(cli: Cli, short_tmp: Path) -> None:
    kernel = short_tmp / "not-a-kernel"
    kernel.write_text("not an ELF\n")
    args = ["run", "-d", str(kernel), "--firecracker-bin", str(cli.binary)]
    err = cli.fails(ExitCode.VM_FAILED, *args, "--workdir", str(cli.workdir), "--id", "bad")
    assert "did not boot" in err and "ELF" in err
    assert cli.ls() == {}
    assert not (cli.workdir / "bad").exists()


def test_a_full_workdir_is_said_on_stderr(cli: Cli, short_tmp: Path) -> None:
    """The VM runs, but its console and log are lost: ``firec run`` says so."""
    with small_tmpfs(short_tmp / "small") as small:
        fill(small)
        args = cli.vm_args()
        args[args.index("--workdir") + 1] = str(small / "vms")
        result = subprocess.run(
            cli.command("run", "-d", "--id", "full", *args),
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "full\n"
        said = " ".join(result.stderr.split())  # rich may wrap long lines
        assert said.startswith("warning: microVM full: no space left for the serial console")
        assert str(small / "vms" / "full" / "console.log") in said
        assert "Firecracker's log" in said and "is lost" in said
        record = cli.registry.load("full")
        assert record is not None
        cli("rm", "-f", "full")
        nothing_left(record)


# -- jailed -------------------------------------------------------------------------------------


def test_a_jailed_vm_and_its_removal(cli: Cli, jailer_binary: Path, short_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root")
    extra = ["--jailer", "--jailer-bin", str(jailer_binary), "--uid", "4321", "--gid", "4321"]
    extra += ["--chroot-base", str(short_tmp / "jail")]
    if Path("/sys/fs/cgroup/cpuset/cgroup.procs").exists():  # cgroup v1
        extra += ["--cgroup", "cpuset.cpus=0", "--cgroup", "cpuset.mems=0"]
    record = cli.run_detached("jailed", *extra)
    assert record.jail is not None and Path(record.jail, "root").is_dir()
    assert all(Path(c).is_dir() for c in record.cgroups)
    assert cli("console", "jailed", "--no-follow").startswith(BOOT_LINE)
    assert json.loads(cli("metrics", "jailed", "--json"))["utc_timestamp_ms"] > 0
    assert cli("clone", "jailed", "-d", "--id", "jailed2") == "jailed2\n"
    twin = cli.registry.load("jailed2")
    assert twin is not None and twin.jail is not None and Path(twin.jail).is_dir()
    cli("rm", "-f", "jailed", "jailed2")
    nothing_left(record)
    nothing_left(twin)

    # a jailed foreground VM whose controller is killed: gc removes its jail and cgroups
    process = cli.start_foreground("jailed3", *extra)
    orphan = cli.registry.load("jailed3")
    assert orphan is not None and orphan.jail is not None and Path(orphan.jail).is_dir()
    process.kill()
    process.wait(timeout=30)
    # gc also reaps orphan networks in the host's shared network state directory, which
    # other programs on this host may have left: of this test's VMs, only jailed3 goes
    reaped = {r["id"] for r in json.loads(cli("gc", "--json"))}
    assert "jailed3" in reaped
    nothing_left(orphan)


# -- networked ----------------------------------------------------------------------------------


@pytest.fixture
def host_ns() -> Iterator[str]:
    """A network namespace playing the host, so the real host is never touched."""
    if os.geteuid() != 0:
        pytest.skip("networking needs root")
    host_tools.require("ip")
    name = f"fccli-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.needs_tool("nft")
def test_a_routed_vm_and_gc_of_its_network(host_ns: str, cli: Cli) -> None:
    def in_ns(*args: str) -> list[str]:
        return ["ip", "netns", "exec", host_ns, *args]

    cli.command = lambda *args: in_ns(sys.executable, "-m", "firec.cli", *args)  # type: ignore[method-assign]
    net = ["--net", "routed:172.31.250.0/24", "--publish", "18022:22"]
    record = cli.run_detached("net1", *net)
    vm = cli.ls()["net1"]
    assert vm["addresses"] == ["172.31.250.2/24"]
    network = vm["record"]["network"]
    assert network["netns"] == "fc-net1" and Path("/var/run/netns/fc-net1").exists()
    assert "ip=172.31.250.2::172.31.250.1:255.255.255.0" in vm["record"]["config"]["kernel_args"]
    rules = subprocess.run(
        in_ns("nft", "list", "table", "inet", "firec"), capture_output=True, text=True
    ).stdout
    assert network["nft"]["chain"] in rules and "18022" in rules

    # a foreground VM whose controller is killed: gc takes its network down too
    process = cli.start_foreground("net2", *["--net", "routed:172.31.250.0/24"])
    orphan = cli.registry.load("net2")
    assert orphan is not None and orphan.network is not None
    assert cli.ls()["net2"]["addresses"] == ["172.31.250.3/24"]
    process.kill()
    process.wait(timeout=30)
    # gc also reaps orphan networks in the host's shared network state directory, which
    # other programs on this host may have left: of this test's VMs, only net2 goes
    reaped = {r["id"] for r in json.loads(cli("gc", "--json"))}
    assert "net2" in reaped and "net1" not in reaped
    nothing_left(orphan)

    cli("rm", "-f", "net1")
    nothing_left(record)
    rules = subprocess.run(
        in_ns("nft", "list", "table", "inet", "firec"), capture_output=True, text=True
    ).stdout
    assert "vm_" not in rules
    leases = Path(cli.env["FIREC_STATE_DIR"], "network", "leases", "172.31.250.0_24.json")
    assert json.loads(leases.read_text())["leases"] == {}
