"""firec.cluster on a Ray cluster of several nodes on this machine (as Ray's own tests do).

Each simulated host is a Ray node with its own custom resource and its own
settings file (``FIREC_HOST_CONFIG`` in the node's environment): its own
state, runtime and snapshot directories, and sizes. Host ``c`` says its CPU
is of another vendor than this machine's, so that snapshots taken on ``a``
may not go there. The head node is not a host (its Firecracker does not
exist): it shows how an unusable node is reported. One cluster per backend
and module: the emulator always, a real Firecracker where FIRECRACKER_BIN is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import firec
from firec.cluster.hosts import CpuInfo, HostInfo, HostSettings, VmState
from firec.cluster.placement import Request, place, place_many, snapshot_refusal
from firec.cluster.snapshots import ClusterSnapshot, CopyFromHost, describe_file
from firec.errors import ClusterError, ConfigError, HostLostError, NoFitError, SnapshotError
from firec.host.registry import Registry, reap_abandoned
from tests.conftest import BACKENDS, vmm_command
from tests.support import emulator_wrapper, firecracker_bin

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

MEM_MIB = 128
HOSTS = {
    "a": {"vcpus": 4, "memory_mib": 1024, "labels": {"zone": "x"}},
    "b": {"vcpus": 2, "memory_mib": 512, "labels": {"zone": "y"}, "max_vms": 2},
    "c": {"vcpus": 4, "memory_mib": 1024, "labels": {"zone": "x"}, "other_cpu": True},
}


def _other_vendor() -> str:
    mine = CpuInfo.of_this_host().vendor
    return "GenuineIntel" if mine != "GenuineIntel" else "AuthenticAMD"


def _toml(name: str, base: Path, binary: Path, emulated: bool, spec: dict[str, Any]) -> Path:
    d = base / name
    lines = [
        f'name = "{name}"',
        f"vcpus = {spec['vcpus']}",
        f"memory_mib = {spec['memory_mib']}",
        f'firecracker = "{binary}"',
        f"needs_kvm = {'false' if emulated else 'true'}",
        f'state_dir = "{d}/state"',
        f'runtime_dir = "{d}/run"',
        f'snapshot_dir = "{d}/snaps"',
    ]
    if "max_vms" in spec:
        lines.append(f"max_vms = {spec['max_vms']}")
    if spec.get("other_cpu"):
        lines += ["[cpu]", f'vendor = "{_other_vendor()}"']
    lines += ["[labels]", *(f'{k} = "{v}"' for k, v in spec["labels"].items())]
    d.mkdir(parents=True, exist_ok=True)
    path = d / "host.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SimulatedCluster:
    """A Ray cluster of simulated hosts, and what each keeps where."""

    ray: Any
    base: Path
    nodes: dict[str, Any]
    settings: dict[str, Path]
    kernel: Path
    client_port: int  # Ray Client's server on the head (ray://)

    def add_host(self, name: str) -> None:
        self.nodes[name] = self.ray.add_node(
            num_cpus=1,
            resources={f"firec-test-{name}": 1},
            env_vars={"FIREC_HOST_CONFIG": str(self.settings[name])},
        )

    def config(self, vm_id: str | None = None, vcpus: int = 1) -> firec.Config:
        return self.builder(vm_id, vcpus).build()

    def builder(self, vm_id: str | None = None, vcpus: int = 1) -> firec.Builder:
        return (
            firec.Config.builder(vm_id, self.kernel)
            .machine_cfg()
            .mem_size_mib(MEM_MIB)
            .vcpu_count(vcpus)
            .build()
            .kernel_args("console=ttyS0")
        )

    def left_behind(self) -> list[str]:
        """VM records, sockets and VMM processes left on any host."""
        left = []
        for name in HOSTS:
            vms = self.base / name / "state" / "vms"
            left += [f"{name}: record {p.name}" for p in vms.glob("*.json")] if vms.is_dir() else []
            run = self.base / name / "run"
            left += [f"{name}: {p}" for p in run.iterdir()] if run.is_dir() else []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.base).encode() in cmdline and b"--api-sock" in cmdline:
                    left.append(f"VMM pid {pid}")
        return left


@pytest.fixture(scope="module", params=BACKENDS)
def simulated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, guest_kernel: Path
) -> Iterator[SimulatedCluster]:
    """Three hosts and a head, on this machine; torn down with everything they made."""
    vmm_command(request.param)  # skips, saying why, without a real Firecracker
    base = Path(os.environ.get("FIREC_TEST_TMP", "/tmp")) / f"fc-cl-{os.getpid()}-{request.param}"
    base.mkdir(parents=True)
    emulated = request.param == "emulator"
    binary = emulator_wrapper(base) if emulated else Path(str(firecracker_bin()))
    settings = {n: _toml(n, base, binary, emulated, spec) for n, spec in HOSTS.items()}
    head = base / "head.toml"
    head.write_text('name = "head"\nfirecracker = "/nonexistent/firecracker"\n')
    client_port = _free_port()
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "ray_client_server_port": client_port,
            # a dead node is noticed in about a second, not Ray's default of 15 or more
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
            "env_vars": {"FIREC_HOST_CONFIG": str(head)},
        },
    )
    sim = SimulatedCluster(cluster, base, {}, settings, guest_kernel, client_port)
    try:
        for name in HOSTS:
            sim.add_host(name)
        ray.init(address=cluster.address, namespace=f"firec-test-{request.param}")
        yield sim
        with firec.cluster.connect(namespace=f"firec-test-{request.param}") as c:
            c.stop_hosts()
        deadline = time.monotonic() + 30
        while sim.left_behind() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sim.left_behind() == []
    finally:
        ray.shutdown()
        cluster.shutdown()
        # after a failure above: the hosts are gone, so whatever they left is abandoned
        for name in HOSTS:
            reap_abandoned(Registry(base / name / "state"))
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def cluster(simulated: SimulatedCluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A driver's connection; every VM it made is gone after the test (asserted)."""
    namespace = ray.get_runtime_context().namespace
    c = firec.cluster.connect(namespace=namespace)
    yield c
    c.close()
    assert [v for v in c.ls() if v.owner == c.owner] == []


# -- placement, without Ray ---------------------------------------------------


def _host(name: str, **fields: Any) -> HostInfo:
    values: dict[str, Any] = {
        "name": name,
        "node_id": name,
        "usable": True,
        "vcpus": 4,
        "memory_mib": 1024,
        "vcpus_free": 4,
        "memory_mib_free": 1024,
        "firecracker_version": "1.14.2",
        "snapshot_format": "8.0.0",
        "cpu": CpuInfo("GenuineIntel", "Xeon", ("C3", "T2", "T2S", "T2CL")),
    }
    return HostInfo(**(values | fields))


def _snapshot(**fields: Any) -> ClusterSnapshot:
    values: dict[str, Any] = {
        "name": "s",
        "host": "a",
        "directory": Path("/s"),
        "shared": False,
        "vm_id": "vm",
        "firecracker_version": "1.14.2",
        "snapshot_format": "8.0.0",
        "cpu": CpuInfo("GenuineIntel", "Xeon", ("C3", "T2", "T2S", "T2CL")),
    }
    return ClusterSnapshot(**(values | fields))


def test_joining_through_ray_client_tries_again_when_its_server_fails_a_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from firec.cluster import _ray

    calls: list[str | None] = []
    failures = iter([2, 3, 1])  # sessions failing before one starts, per join below

    def init(address: str | None = None, **options: Any) -> None:
        calls.append(address)
        if left[0]:
            left[0] -= 1
            raise ConnectionAbortedError(
                "Initialization failure from server:\nRuntimeError: "
                "Starting Ray client server failed. See ..."
            )

    left = [next(failures)]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    assert _ray.join("ray://head:10001", "ns") and len(calls) == 3
    left[0] = next(failures)
    with pytest.raises(ConnectionAbortedError) as caught:  # three failures: given up, said why
        _ray.join("ray://head:10001", "ns")
    assert "tried 3 times" in "\n".join(caught.value.__notes__)
    calls.clear()
    left[0] = next(failures)
    with pytest.raises(ConnectionAbortedError):  # not through Ray Client: not tried again
        _ray.join("head:6379", "ns")
    assert calls == ["head:6379"]


def test_placement_packs_the_tightest_host_and_keeps_to_labels_and_limits() -> None:
    big, small = _host("big"), _host("small", memory_mib_free=512, labels={"gpu": "no"})
    assert place(Request(1, 256), [big, small]).name == "small"
    assert place(Request(1, 768), [big, small]).name == "big"
    assert (
        place(Request(1, 256, labels={"zone": "x"}), [big, _host("z", labels={"zone": "x"})]).name
        == "z"
    )
    full = _host("full", max_vms=1, vms=1, memory_mib_free=128)
    assert place(Request(1, 128), [big, full]).name == "big"
    packed = place_many(Request(2, 256), 3, [big, small])
    assert [h.name for h in packed] == ["small", "small", "big"]


def test_no_fit_says_what_was_asked_and_what_each_host_has() -> None:
    hosts = [_host("a", vcpus_free=1), _host("b", usable=False, reason="no /dev/kvm")]
    with pytest.raises(NoFitError) as caught:
        place(Request(2, 256, labels={"zone": "x"}), hosts)
    text = str(caught.value)
    assert "2 vCPUs and 256 MiB with labels zone=x" in text
    assert "a: no label zone=x" in text and "b: not usable: no /dev/kvm" in text
    with pytest.raises(NoFitError, match=r"(?s)3 VMs of .*a: room for 2 \(4 vCPUs, 1024 MiB"):
        place_many(Request(2, 512), 3, [_host("a")])


def test_a_snapshot_goes_only_where_it_can_be_restored() -> None:
    snap = _snapshot()
    assert snapshot_refusal(snap, _host("same")) is None
    amd = _host("amd", cpu=CpuInfo("AuthenticAMD", "EPYC", ("T2A",)))
    assert "CPU vendor AuthenticAMD, the snapshot was taken on GenuineIntel" in str(
        snapshot_refusal(snap, amd)
    )
    legacy = _host("old", firecracker_version="1.4.0", snapshot_format="1.4.0")
    assert "1.7 replaced the snapshot format" in str(snapshot_refusal(snap, legacy))
    newer = _snapshot(snapshot_format="8.1.0")
    assert "not v8.1.0" in str(snapshot_refusal(newer, _host("same")))
    t2 = _snapshot(cpu_template="T2A")
    assert "no CPU template T2A" in str(snapshot_refusal(t2, _host("same")))
    with pytest.raises(NoFitError, match=r"old: Firecracker 1\.4\.0 here"):
        place(Request(1, 128, snapshot=snap), [legacy])


def test_host_settings_are_read_from_a_file_and_an_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('name = "k1"\nvcpus = 8\n[labels]\nzone = "eu"\n[cpu]\nvendor = "ARM"\n')
    settings = HostSettings.from_toml(path)
    assert (settings.name, settings.vcpus, dict(settings.labels)) == ("k1", 8, {"zone": "eu"})
    assert settings.cpu == CpuInfo("ARM", "", ("V1N1",))
    path.write_text("vcpu = 8\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) vcpu; known: .*vcpus"):
        HostSettings.from_toml(path)


def test_a_copy_keeps_holes_and_a_wrong_digest_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with (source / "memory").open("wb") as f:
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(os.urandom(1 << 20))
    (source / "snapshot.json").write_text("{}")
    files = [describe_file(source / "memory"), describe_file(source / "snapshot.json")]
    assert files[0].extents == ((8 << 20, 1 << 20),)

    async def describe() -> list[Any]:
        return files

    async def read(name: str, offset: int, length: int) -> bytes:
        with (source / name).open("rb") as f:
            f.seek(offset)
            return f.read(length)

    snap = _snapshot(directory=source, name="s1")
    store = CopyFromHost()
    copied = asyncio.run(store.bring(snap, tmp_path / "here", describe, read))
    assert (copied / "memory").read_bytes() == (source / "memory").read_bytes()
    assert (copied / "memory").stat().st_blocks * 512 <= 2 << 20  # sparse: 1 MiB of data

    async def corrupt(name: str, offset: int, length: int) -> bytes:
        data = bytearray(await read(name, offset, length))
        data[0] ^= 1
        return bytes(data)

    with pytest.raises(SnapshotError, match="does not match its SHA-256"):
        asyncio.run(
            store.bring(_snapshot(directory=source, name="s2"), tmp_path / "h2", describe, corrupt)
        )
    assert list((tmp_path / "h2" / "copies" / "a").iterdir()) == []


# -- on the simulated cluster ----------------------------------------------------


def test_hosts_report_their_capacity_and_an_unusable_node_says_why(cluster: Any) -> None:
    hosts = {h.name: h for h in cluster.hosts()}
    assert set(hosts) == {"a", "b", "c", "head"}
    assert not hosts["head"].usable and "no Firecracker" in hosts["head"].reason
    a = hosts["a"]
    assert (a.usable, a.vcpus, a.memory_mib, a.max_vms) == (True, 4, 1024, None)
    assert a.firecracker_version and a.cpu.vendor == CpuInfo.of_this_host().vendor
    assert hosts["c"].cpu.vendor == _other_vendor()
    assert hosts["b"].labels == {"zone": "y"} and hosts["b"].max_vms == 2


def test_a_vm_is_created_started_seen_and_deleted(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    vm = cluster.create(simulated.config("cl-one"), host="a")
    assert (vm.host, vm.state()) == ("a", VmState.NOT_STARTED)
    vm.start()
    assert vm.state() == VmState.RUNNING
    deadline = time.monotonic() + 10
    while (
        not any("firec-guest" in line for line in vm.console_lines())
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert any("firec-guest" in line for line in vm.console_lines())
    vm.pause()
    assert vm.state() == VmState.PAUSED
    vm.resume()
    [listed] = [v for v in cluster.ls() if v.vm_id == "cl-one"]
    assert (listed.host, listed.state, listed.owner) == ("a", VmState.RUNNING, cluster.owner)
    assert (simulated.base / "a" / "state" / "vms" / "cl-one.json").exists()
    vm.delete()
    assert [v for v in cluster.ls() if v.vm_id == "cl-one"] == []
    assert not (simulated.base / "a" / "state" / "vms" / "cl-one.json").exists()


def test_run_boots_in_one_call_and_a_vm_that_fails_to_boot_is_not_left(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    with cluster.run(simulated.config("cl-run"), host="a") as vm:
        assert (vm.host, vm.state()) == ("a", VmState.RUNNING)
        [listed] = [v for v in cluster.ls() if v.vm_id == "cl-run"]
        assert listed.state == VmState.RUNNING
    assert [v for v in cluster.ls() if v.vm_id == "cl-run"] == []

    free = {h.name: h.vcpus_free for h in cluster.hosts()}
    not_a_kernel = simulated.base / "not-a-kernel"
    not_a_kernel.write_bytes(b"this is not an ELF file\n" * 100)
    config = simulated.config("cl-no-boot").replace(kernel_image=not_a_kernel)
    with pytest.raises(firec.errors.APIError) as caught:
        cluster.run(config, host="a")
    assert caught.value.fault_message  # Firecracker's own words on the kernel
    assert [v for v in cluster.ls() if v.vm_id == "cl-no-boot"] == []
    assert {h.name: h.vcpus_free for h in cluster.hosts()} == free
    assert simulated.left_behind() == []
    # the id is free again on host a: nothing of the first try is held there
    with cluster.run(simulated.config("cl-no-boot"), host="a") as vm:
        assert vm.state() == VmState.RUNNING


def test_vms_are_packed_by_size_labels_and_limits(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    vms = [cluster.create(simulated.config()) for _ in range(3)]
    try:
        # b is the tightest fit (512 MiB) until its limit of 2 VMs; then a (c has the same room)
        assert [vm.host for vm in vms[:2]] == ["b", "b"]
        assert vms[2].host in {"a", "c"}
        labelled = cluster.create(simulated.config(), labels={"zone": "x"})
        vms.append(labelled)
        assert labelled.host in {"a", "c"}
        vms.append(cluster.create(simulated.config(), host="c"))
        assert vms[-1].host == "c"
        with pytest.raises(NoFitError) as caught:
            cluster.create(simulated.config(vcpus=8))
        text = str(caught.value)
        assert "8 vCPUs and 128 MiB" in text and "b: at its limit of 2 VMs" in text
        assert "head: not usable: no Firecracker" in text and "a: only" in text
    finally:
        for vm in vms:
            vm.delete()


def test_a_snapshot_moves_to_another_host_through_the_copy_store(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    with cluster.create(simulated.config("cl-snap"), host="a") as vm:
        vm.start()
        snap = vm.snapshot("cl-base")
    assert (snap.host, snap.cpu.vendor) == ("a", CpuInfo.of_this_host().vendor)
    [clone] = cluster.restore(snap, 1, host="b")
    with clone:
        assert (clone.host, clone.state()) == ("b", VmState.RUNNING)
        copy = simulated.base / "b" / "snaps" / "copies" / "a" / "cl-base"
        original = simulated.base / "a" / "snaps" / "cl-base"
        for name in ("memory", "vmstate", "snapshot.json"):
            digest = hashlib.sha256((original / name).read_bytes()).hexdigest()
            assert hashlib.sha256((copy / name).read_bytes()).hexdigest() == digest
            assert describe_file(copy / name).sha256 == digest
        memory = copy / "memory"
        assert memory.stat().st_blocks * 512 <= (original / "memory").stat().st_blocks * 512
    with pytest.raises(
        NoFitError, match=f"c: CPU vendor {_other_vendor()}, the snapshot was taken"
    ):
        cluster.restore(snap, 1, host="c")
    clones = cluster.restore(snap, 3)  # never on c
    try:
        assert {vm.host for vm in clones} <= {"a", "b"} and len(clones) == 3
        assert all(vm.state() == VmState.RUNNING for vm in clones)
    finally:
        for vm in clones:
            vm.delete()


def test_a_view_made_stale_by_another_driver_is_looked_at_again(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    from firec.cluster._async.cluster import VIEW_TTL

    with cluster.create(simulated.config("cl-stale"), host="b") as vm:
        vm.start()
        snap = vm.snapshot("cl-stale-base")
    namespace = ray.get_runtime_context().namespace
    with firec.cluster.connect(namespace=namespace) as other:
        taken = [other.create(simulated.config(), host="b") for _ in range(2)]  # b's limit
        seen = {h.name: h for h in cluster.hosts()}
        assert seen["b"].vms == 2
        for vm in taken:
            vm.delete()
    time.sleep(VIEW_TTL + 0.1)
    # our view says b is full; b has room again: both placements look again and find it
    [clone] = cluster.restore(snap, 1, host="b")
    with clone, cluster.create(simulated.config(), host="b") as made:
        assert (clone.host, made.host) == ("b", "b")


def test_a_remote_error_is_firecs_own(cluster: Any, simulated: SimulatedCluster) -> None:
    with cluster.create(simulated.config("cl-twice"), host="a") as vm:
        with pytest.raises(ClusterError, match="host a already has a microVM cl-twice"):
            cluster.create(simulated.config("cl-twice"), host="a")
        with pytest.raises(firec.errors.MachineError, match="no vsock"):
            vm.exec(["true"])


def test_exec_and_files_reach_the_guest_agent_of_a_remote_vm(
    cluster: Any, simulated: SimulatedCluster, request: pytest.FixtureRequest
) -> None:
    if "emulator" not in request.node.callspec.id:
        pytest.skip(
            "no guest user space boots on this host's KVM: the agent runs behind the emulator"
        )
    config = (
        simulated.builder("cl-exec").vsock(3, simulated.base / "cl-exec.v.sock").agent().build()
    )
    with cluster.create(config, host="b") as vm:
        vm.start()
        vm.wait_ready(10)
        result = vm.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
        target = simulated.base / "cl-exec.txt"
        assert vm.files.write(target, b"remote bytes") == 12
        assert vm.files.read(target) == b"remote bytes" and vm.files.exists(target)
        vm.files.remove(target)
        assert not vm.files.exists(target)
        with pytest.raises(firec.errors.CommandError, match="false"):
            vm.exec(["false"], check=True)


def test_a_killed_host_actor_loses_its_vms_and_its_successor_reaps_them(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    from firec.cluster import _ray

    vm = cluster.create(simulated.config("cl-on-b"), host="b")
    vm.start()
    [node_id] = [h.node_id for h in cluster.hosts() if h.name == "b"]
    namespace = ray.get_runtime_context().namespace
    ray.kill(ray.get_actor(_ray.host_name(node_id), namespace=namespace), no_restart=True)
    deadline = time.monotonic() + 30  # ray.kill is asynchronous: the actor dies in a moment
    while vm.state() != VmState.LOST and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vm.state() == VmState.LOST
    record = simulated.base / "b" / "state" / "vms" / "cl-on-b.json"
    assert record.exists()  # its VMM runs on, with nobody to own it...
    hosts = {h.name: h for h in cluster.hosts()}  # ...until a new host actor starts on the node
    assert hosts["b"].usable and hosts["b"].vms == 0
    assert not record.exists()
    assert [v for v in cluster.ls() if v.host == "b"] == []
    vm.delete()


_DRIVER = """
import os, signal, sys, firec, firec.cluster, ray
from pathlib import Path
ray.init(address=sys.argv[1], namespace=sys.argv[2])
c = firec.cluster.connect(namespace=sys.argv[2])
def config(i):
    return (firec.Config.builder(i, Path(sys.argv[3])).machine_cfg().mem_size_mib(128)
            .build().kernel_args("console=ttyS0").build())
c.create(config("cl-orphan"), host="a").start()
c.create(config("cl-kept"), host="a", detached=True).start()
print("made", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_a_killed_driver_left_is_reaped_and_detached_vms_stay(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    namespace = ray.get_runtime_context().namespace
    address = simulated.ray.address
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_DRIVER), address, namespace, str(simulated.kernel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL and "made" in run.stdout, run.stderr[-2000:]
    # hosts notice a gone driver by themselves within a second or two; gc() looks at once
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cluster.gc()
        if "cl-orphan" not in {v.vm_id for v in cluster.ls()}:
            break
        time.sleep(0.2)
    left = {v.vm_id: v for v in cluster.ls()}
    assert "cl-orphan" not in left and left["cl-kept"].detached
    assert not (simulated.base / "a" / "state" / "vms" / "cl-orphan.json").exists()
    kept = cluster.get("cl-kept")
    assert kept.state() == VmState.RUNNING
    kept.delete()


_CLIENT_DRIVER = """
import os, sys, firec, firec.cluster
from pathlib import Path
c = firec.cluster.connect(sys.argv[1], namespace=sys.argv[2])
def config(i):
    return (firec.Config.builder(i, Path(sys.argv[3])).machine_cfg().mem_size_mib(128)
            .build().kernel_args("console=ttyS0").build())
vm = c.create(config("cl-client"), host="a")
vm.start()
print(vm.state().value, sorted(v.vm_id for v in c.ls()), flush=True)
c.create(config("cl-client-kept"), host="a", detached=True).start()
os._exit(0)  # gone without closing
"""


def test_a_driver_through_ray_client_runs_vms_and_what_it_left_is_reaped(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    pytest.importorskip("grpc", reason="Ray Client needs ray[client]")
    namespace = ray.get_runtime_context().namespace
    address = f"ray://127.0.0.1:{simulated.client_port}"
    run = subprocess.run(
        [sys.executable, "-c", _CLIENT_DRIVER, address, namespace, str(simulated.kernel)],
        capture_output=True,
        text=True,
        timeout=120,
        # a client gone without closing keeps its session (and driver) this many seconds
        # (Ray's default: 30); the client says so to the server when it connects
        env={**os.environ, "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "2"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("Running ") and "'cl-client'" in run.stdout
    # the client's driver lives in Ray Client's server on the head, which ends it when
    # the client has not come back within the grace period: then its VMs are deleted
    deadline = time.monotonic() + 60
    while "cl-client" in {v.vm_id for v in cluster.ls()} and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {v.vm_id: v for v in cluster.ls()}
    assert "cl-client" not in left and left["cl-client-kept"].detached
    cluster.get("cl-client-kept").delete()


def test_a_dead_node_loses_its_vms_and_the_others_keep_serving(
    cluster: Any, simulated: SimulatedCluster
) -> None:
    vm = cluster.create(simulated.config("cl-on-c"), host="c")
    vm.start()
    simulated.ray.remove_node(simulated.nodes.pop("c"))
    assert vm.state() == VmState.LOST
    with pytest.raises(HostLostError, match="microVM cl-on-c is lost: its host c died"):
        vm.pause()
    [lost] = [v for v in cluster.ls() if v.vm_id == "cl-on-c"]
    assert lost.state == VmState.LOST and lost.host == "c"
    with cluster.create(simulated.config("cl-after"), host="a") as other:
        other.start()
        assert other.state() == VmState.RUNNING
    hosts = {h.name: h for h in cluster.hosts()}
    assert "c" not in hosts or not hosts["c"].usable
    with pytest.raises(NoFitError):
        cluster.create(simulated.config(), host="c")
    vm.delete()  # a lost VM is forgotten
    # the node comes back: its new host reaps what the dead one left
    simulated.add_host("c")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        hosts = {h.name: h for h in cluster.hosts()}
        if "c" in hosts and hosts["c"].usable:
            break
        time.sleep(0.5)
    assert hosts["c"].usable and hosts["c"].vms == 0
    assert [v for v in cluster.ls() if v.host == "c"] == []
    assert not (simulated.base / "c" / "state" / "vms" / "cl-on-c.json").exists()


def test_the_command_line_lists_runs_and_removes(
    cluster: Any, simulated: SimulatedCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    from firec.cli import main

    ns = ["--namespace", ray.get_runtime_context().namespace]
    assert main(["cluster", "hosts", "--json", *ns]) == 0
    listed = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    assert listed["a"]["usable"] and "no Firecracker" in listed["head"]["reason"]
    run = ["cluster", "run", str(simulated.kernel), "--name", "cl-cli", "--label", "zone=y"]
    assert main([*run, "--memory", "128", "--json", *ns]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "cl-cli", "host": "b"}
    assert main(["cluster", "ls", *ns]) == 0
    table = capsys.readouterr().out
    assert "cl-cli" in table and "Running" in table and "detached" in table
    assert main(["cluster", "run", str(simulated.kernel), "--cpus", "16", *ns]) == 3
    assert "no host can take 16 vCPUs" in capsys.readouterr().err
    assert main(["cluster", "rm", "cl-cli", *ns]) == 0
    assert [v for v in cluster.ls() if v.vm_id == "cl-cli"] == []


async def test_the_async_cluster_restores_from_a_shared_directory_as_it_is(
    simulated: SimulatedCluster,
) -> None:
    from firec.cluster import AsyncCluster, SharedDirectory

    shared = simulated.base / "shared"
    namespace = ray.get_runtime_context().namespace
    async with await AsyncCluster.connect(store=SharedDirectory(shared), namespace=namespace) as c:
        vm = await c.create(simulated.config("cl-async"), host="a")
        await vm.start()
        snap = await vm.snapshot("cl-shared", resume=False)
        assert (snap.shared, snap.directory) == (True, shared / "cl-shared")
        assert await vm.state() == VmState.PAUSED
        await vm.delete()
        [clone] = await c.restore(snap, 1, host="b")
        assert await clone.state() == VmState.RUNNING
        assert not (simulated.base / "b" / "snaps" / "copies" / "a" / "cl-shared").exists()
        mine = [v.vm_id for v in await c.ls() if v.owner == c.owner]
        assert mine == [clone.vm_id]
    # leaving the block deleted the clone
    async with await AsyncCluster.connect(namespace=namespace) as c:
        assert [v for v in await c.ls() if v.vm_id == clone.vm_id] == []


def test_the_examples_in_the_cluster_docstrings_run() -> None:
    import doctest
    import importlib

    for name in ("firec.cluster.hosts", "firec.cluster.placement", "firec.cluster.snapshots"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, name


def test_without_ray_the_command_line_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from firec.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["cluster", "hosts"]) == 3
    assert "pip install 'firec[ray]'" in capsys.readouterr().err


async def test_creates_made_at_once_fill_every_host_and_then_no_more(
    simulated: SimulatedCluster,
) -> None:
    from firec.cluster import AsyncCluster

    namespace = ray.get_runtime_context().namespace
    async with await AsyncCluster.connect(namespace=namespace) as c:
        hosts = [h for h in await c.hosts() if h.usable]
        room = {h.name: min(h.vcpus_free, h.memory_mib_free // MEM_MIB) for h in hosts}
        room["b"] = min(room["b"], 2)
        assert room == {"a": 4, "b": 2, "c": 4}  # b: its limit of 2 VMs
        made = await asyncio.gather(*(c.create(simulated.config()) for _ in range(10)))
        try:
            placed = {name: sum(vm.host == name for vm in made) for name in room}
            assert placed == room
            with pytest.raises(NoFitError, match="a: only 0 vCPUs"):
                await c.create(simulated.config())
        finally:
            await asyncio.gather(*(vm.delete() for vm in made))


async def test_two_deletes_of_one_vm_at_once_both_end_when_it_is_gone(
    simulated: SimulatedCluster,
) -> None:
    from firec.cluster import AsyncCluster

    namespace = ray.get_runtime_context().namespace
    async with await AsyncCluster.connect(namespace=namespace) as c:
        vm = await c.create(simulated.config("cl-twice-deleted"), host="a")
        await vm.start()
        other = await c.get("cl-twice-deleted")
        await asyncio.gather(vm.delete(), other.delete())
        assert [v for v in await c.ls() if v.vm_id == "cl-twice-deleted"] == []
        assert not (simulated.base / "a" / "state" / "vms" / "cl-twice-deleted.json").exists()
