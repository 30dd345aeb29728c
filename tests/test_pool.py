"""Pools of microVMs and forks of a running one, on the emulator and on real Firecracker.

Run against a real Firecracker with ``FIRECRACKER_BIN=/opt/fc/firecracker-v1.14.2``
(or v1.0.0). Each test checks that the pool hands every VM out once, replaces
what died, and leaves nothing behind when it closes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import firec
import firec.network as fn
from firec._proc import ProcessRef
from firec.api.models import SnapshotType
from firec.api.versions import Version
from firec.errors import PoolEmptyError, ValidationError
from firec.host.registry import Registry
from firec.pool import PoolStats, WhenEmpty
from firec.snapshots.snapshot import Snapshot
from firec.testing.guest import BOOT_LINE
from firec.vm.state import MachineState
from tests.network_support import unique
from tests.support import binary_version, console_text, guest_builder, in_jail

MEM_MIB = 32


@pytest.fixture
def builder(vmm_binary: Path, guest_kernel: Path, short_tmp: Path) -> firec.Builder:
    return guest_builder(None, vmm_binary, guest_kernel, short_tmp, MEM_MIB).kernel_args(
        "console=ttyS0"
    )


@pytest.fixture
def snapshot(builder: firec.Builder, short_tmp: Path) -> Snapshot:
    """The test guest, booted and snapshotted (then stopped)."""
    with firec.Machine.create(builder.build()) as machine:
        machine.start()
        assert BOOT_LINE in console_text(machine, BOOT_LINE)
        return machine.snapshot(short_tmp / "base")


@pytest.fixture
def snapshot_with_vsock(builder: firec.Builder, short_tmp: Path, vmm_binary: Path) -> Snapshot:
    """The test guest with a vsock device, snapshotted; only where vsock_override exists."""
    version = binary_version(vmm_binary)
    if version < Version(1, 16):
        pytest.skip(f"vsock_override needs Firecracker 1.16; this one is {version}")
    with firec.Machine.create(builder.vsock(3, short_tmp / "base.sock").build()) as machine:
        machine.start()
        return machine.snapshot(short_tmp / "vbase")


@pytest.fixture
def pool_config(builder: firec.Builder) -> Callable[[str], firec.Config]:
    """How a pool's VMs run (the backend's binary, firec's files in the test's directory)."""
    return lambda prefix: builder.build().replace(vm_id=prefix)


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def pool_vmms(prefix: str) -> list[int]:
    """The pids of the running VMMs whose id starts with ``prefix-`` (from their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ids = [v for f, v in itertools.pairwise(argv) if f == b"--id"]
        if state != "Z" and any(i.startswith(f"{prefix}-".encode()) for i in ids):
            found.append(int(entry.name))
    return found


def assert_pool_gone(prefix: str, short_tmp: Path) -> None:
    until(lambda: not pool_vmms(prefix), f"the VMMs of pool {prefix} end")
    left = sorted(p.name for p in (short_tmp / "vms").glob(f"{prefix}-*"))
    assert left == [], f"VM directories left: {left}"
    assert [r.vm_id for r in Registry().records() if r.vm_id.startswith(prefix)] == []


def test_acquire_hands_out_each_vm_once_and_its_release_removes_it(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-once")
    with firec.Pool(snapshot, size=2, config=config) as pool:
        assert len(pool) == 2
        seen = set()
        for _ in range(4):
            with pool.acquire() as vm:
                assert vm.state() is MachineState.RUNNING
                assert vm.vm_id not in seen
                seen.add(vm.vm_id)
                vm_dir, socket = vm.launch.vm_dir, vm.socket_path
            assert not vm_dir.exists() and not socket.exists()
        stats = pool.stats
        assert isinstance(stats, PoolStats)
        assert stats.handed_out == 4 and stats.hits + stats.misses == 4
        assert stats.refill_latency is not None and stats.failures == 0
    assert_pool_gone("p-once", short_tmp)


def test_the_refill_follows_a_burst_within_max_size(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-burst")
    with firec.Pool(snapshot, size=2, max_size=3, config=config) as pool:
        burst = [pool.acquire() for _ in range(3)]  # 2 ready, 1 restored for the caller
        try:
            assert len({vm.vm_id for vm in burst}) == 3
            assert pool.stats.hits == 2 and pool.stats.misses == 1
            until(lambda: len(pool) == 2, "the pool is full again")
            assert len(pool_vmms("p-burst")) == 5  # 3 handed out, 2 ready
        finally:
            for vm in burst:
                vm.delete()
        time.sleep(0.3)
        assert len(pool) == 2 and pool.stats.restoring == 0  # never more than size ready
    assert_pool_gone("p-burst", short_tmp)


def test_a_pooled_vm_killed_or_hung_is_replaced_and_never_handed_out(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-health")
    with firec.Pool(snapshot, size=1, config=config, health_interval=0.2) as pool:
        hung = Registry().load("p-health-0")
        assert hung is not None and hung.vmm is not None
        os.kill(hung.vmm.pid, signal.SIGSTOP)  # it stops answering
        until(lambda: pool.stats.replaced == 1 and len(pool) == 1, "the hung VM is replaced")
        killed = Registry().load("p-health-1")
        assert killed is not None and killed.vmm is not None
        dead = killed.vmm.pid
        os.kill(dead, signal.SIGKILL)  # it dies behind the pool's back
        until(lambda: ProcessRef.of(dead) is None, "the killed VMM is dead (a zombie, or gone)")
        with pool.acquire() as vm:
            assert vm.vm_id not in ("p-health-0", "p-health-1")
            assert vm.state() is MachineState.RUNNING
        assert pool.stats.replaced == 2
    assert_pool_gone("p-health", short_tmp)


def test_an_empty_pool_restores_waits_or_fails_as_asked(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-empty")
    with firec.Pool(snapshot, size=1, max_size=2, config=config) as pool:
        first = pool.acquire()  # the ready one
        try:
            with pytest.raises(PoolEmptyError, match="no VM is ready"):
                pool.acquire(when_empty="fail")
            with pool.acquire(when_empty=WhenEmpty.WAIT, timeout=30) as waited:
                assert waited.state() is MachineState.RUNNING  # the refill's next one
        finally:
            first.delete()
    with firec.Pool(snapshot, size=0, max_size=1, config=config.replace(vm_id="p-empty2")) as pool:
        with pytest.raises(PoolEmptyError, match=r"within 0\.3s"):
            pool.acquire(when_empty="wait", timeout=0.3)  # size 0: nothing is refilled
        with pool.acquire() as restored:  # restored now, for this caller
            assert restored.state() is MachineState.RUNNING
        assert pool.stats.hits == 0 and pool.stats.misses == 2
    assert_pool_gone("p-empty", short_tmp)


def test_each_vm_is_a_machine_of_its_own(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-own")
    with firec.Pool(
        snapshot,
        size=2,
        config=config,
        mmds=lambda n, vm_id: {"hostname": vm_id, "token": f"secret-{n}"},
    ) as pool:
        one, two = pool.acquire(), pool.acquire()
        try:
            assert one.vm_id != two.vm_id and one.pid != two.pid
            assert one.socket_path != two.socket_path
            assert one.launch.vm_dir != two.launch.vm_dir
            assert one.client.get_mmds() == {"hostname": one.vm_id, "token": "secret-0"}
            assert two.client.get_mmds() == {"hostname": two.vm_id, "token": "secret-1"}
            one.pause()  # one VM's state is not the other's
            assert two.state() is MachineState.RUNNING
        finally:
            one.delete()
            two.delete()
    assert_pool_gone("p-own", short_tmp)


def test_a_pool_from_a_config_boots_once_and_pools_its_snapshot(
    builder: firec.Builder, short_tmp: Path
) -> None:
    config = builder.build().replace(vm_id="p-boot")
    with firec.Pool.from_config(config, short_tmp / "snap", ready=BOOT_LINE, size=1) as pool:
        with pool.acquire() as vm:
            assert vm.state() is MachineState.RUNNING
        assert (short_tmp / "snap").is_dir()
    assert_pool_gone("p-boot", short_tmp)
    with pytest.raises(firec.errors.MachineError, match="no line with 'never printed'"):
        firec.Pool.from_config(
            builder.build().replace(vm_id="p-never"),
            short_tmp / "snap2",
            ready="never printed",
            ready_timeout=0.5,
        )
    assert_pool_gone("p-never", short_tmp)


def test_bad_pool_settings_are_refused(snapshot: Snapshot) -> None:
    with pytest.raises(ValidationError, match="max_size"):
        firec.Pool(snapshot, size=3, max_size=2)
    with pytest.raises(ValidationError, match="hold not even one VM"):
        firec.Pool(snapshot, memory_budget=1 << 20)
    with pytest.raises(ValueError, match="'sometimes'"):
        firec.Pool(snapshot, when_empty="sometimes")


async def test_the_async_pool_hands_out_concurrently_on_one_loop(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    config = pool_config("p-async")
    async with firec.AsyncPool(snapshot, size=2, max_size=4, config=config) as pool:
        vms = await asyncio.gather(*(pool.acquire() for _ in range(4)))
        try:
            assert len({vm.vm_id for vm in vms}) == 4
            states = await asyncio.gather(*(vm.state() for vm in vms))
            assert set(states) == {MachineState.RUNNING}
        finally:
            await asyncio.gather(*(vm.delete() for vm in vms))
        assert pool.stats.handed_out == 4
    assert_pool_gone("p-async", short_tmp)


def test_a_fork_leaves_the_parent_running_and_the_children_independent(
    builder: firec.Builder, short_tmp: Path
) -> None:
    with firec.Machine.create(builder.build()) as parent:
        parent.start()
        assert BOOT_LINE in console_text(parent, BOOT_LINE)
        fork = parent.fork(2)
        one, two = fork.children
        try:
            assert parent.state() is MachineState.RUNNING
            assert 0 < fork.paused_for <= fork.children_in
            assert {one.state(), two.state()} == {MachineState.RUNNING}
            assert len({parent.vm_id, one.vm_id, two.vm_id}) == 3
            assert fork.snapshot is not None and fork.snapshot.mem_size_mib == MEM_MIB
            one.pause()
            assert two.state() is MachineState.RUNNING
            assert parent.state() is MachineState.RUNNING
            two.delete()
            assert parent.state() is MachineState.RUNNING and one.state() is MachineState.PAUSED
        finally:
            one.delete()
            two.delete()
        again = parent.fork(1)  # a second fork of the same parent
        again.children[0].delete()
        assert parent.state() is MachineState.RUNNING


@pytest.mark.needs_tool("nft")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_NET_ADMIN) for taps and namespaces")
def test_each_pooled_vm_gets_its_own_network(
    vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    subnet = "10.213.20.0/24"
    state = short_tmp / "state"
    routed = fn.RoutedNetwork(subnet, address="10.213.20.2", masquerade=False)
    config = (
        guest_builder(unique("p-net"), vmm_binary, guest_kernel, short_tmp, MEM_MIB)
        .kernel_args("console=ttyS0")
        .add_network_interface(fn.Interface("eth0", unique("fctap"), network=routed))
        .state_dir(state)
        .build()
    )
    with firec.Machine.create(config) as original:
        original.start()
        snapshot = original.snapshot(short_tmp / "snap")
    clone_plan = fn.RoutedNetwork(subnet, masquerade=False, guest_address="10.213.20.2")
    prefix = unique("p-net")
    with firec.Pool(
        snapshot, size=2, config=config.replace(vm_id=prefix), network=clone_plan
    ) as pool:
        one, two = pool.acquire(), pool.acquire()
        try:
            assert one.config.net_ns and two.config.net_ns
            assert one.config.net_ns != two.config.net_ns  # a namespace (and tap) each
            leases = fn.LeaseStore(state, subnet).leases()
            assert len({lease.address for lease in leases}) == len(leases) >= 2
        finally:
            one.delete()
            two.delete()
    assert_pool_gone(prefix, short_tmp)
    assert fn.LeaseStore(state, subnet).leases() == []


def test_jailed_pooled_vms_each_have_their_own_jail_and_vsock(
    jailer_binary: Path, vmm_binary: Path, guest_kernel: Path, short_tmp: Path
) -> None:
    def jailed(vm_id: str) -> firec.Config:
        builder = guest_builder(vm_id, vmm_binary, guest_kernel, short_tmp, MEM_MIB)
        builder = builder.kernel_args("console=ttyS0").vsock(3, "/v.sock")
        return in_jail(builder, jailer_binary, vmm_binary, short_tmp).build().build()

    with firec.Machine.create(jailed("p-jsrc")) as source:
        source.start()
        snapshot = source.snapshot(short_tmp / "jsnap")
    with firec.Pool(snapshot, size=2, config=jailed("p-jail")) as pool:
        one, two = pool.acquire(), pool.acquire()
        try:
            jails = [vm.config.jail for vm in (one, two)]
            assert jails[0] is not None and jails[1] is not None
            assert jails[0].root != jails[1].root
            assert one.vsock_path == jails[0].root / "v.sock"
            assert two.vsock_path == jails[1].root / "v.sock"
            assert one.vsock_path.is_socket() and two.vsock_path.is_socket()
        finally:
            one.delete()
            two.delete()
        assert not jails[0].base.exists() and not jails[1].base.exists()
    assert_pool_gone("p-jail", short_tmp)


def test_plain_pooled_vms_get_their_own_vsock_by_override(
    snapshot_with_vsock: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    with firec.Pool(
        snapshot_with_vsock,
        size=2,
        config=pool_config("p-vsock"),
        vsock_override=str(short_tmp / "pv-{i}.sock"),
    ) as pool:
        one, two = pool.acquire(), pool.acquire()
        try:
            assert {one.vsock_path, two.vsock_path} == {
                short_tmp / "pv-0.sock",
                short_tmp / "pv-1.sock",
            }
        finally:
            one.delete()
            two.delete()
    assert_pool_gone("p-vsock", short_tmp)


def test_the_memory_budget_bounds_the_pool(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    budget = 2 * snapshot.memory_size  # 2 VMs of the 3 asked for fit
    pool = firec.Pool(snapshot, size=3, config=pool_config("p-budget2"), memory_budget=budget)
    try:
        with pytest.raises(PoolEmptyError, match="2 of 3 VMs ready"):
            pool.start(timeout=3)
        time.sleep(0.3)
        assert len(pool) == 2 and len(pool_vmms("p-budget2")) == 2
        vm = pool.acquire(when_empty="fail")  # a hit; the refill stays within the budget
        vm.delete()
        until(lambda: len(pool) == 2, "the refill replaces it")
    finally:
        pool.close()
    assert_pool_gone("p-budget2", short_tmp)


def test_failed_restores_are_counted_named_and_retried(
    snapshot: Snapshot, short_tmp: Path, pool_config: Callable[[str], firec.Config]
) -> None:
    memory = snapshot.memory_file
    hidden = memory.with_name("memory.hidden")
    pool = firec.Pool(snapshot, size=1, config=pool_config("p-fail"))
    memory.rename(hidden)  # every restore now fails before it spawns anything
    try:
        with pytest.raises(PoolEmptyError, match=r"0 of 1 VMs ready .*SnapshotError"):
            pool.start(timeout=1)
        assert pool.stats.failures >= 1 and "SnapshotError" in (pool.stats.last_error or "")
        with pytest.raises(firec.errors.SnapshotError):
            pool.acquire()  # restored for the caller: the error is the caller's
        hidden.rename(memory)  # the refill retries, and recovers
        until(lambda: len(pool) == 1, "the refill recovers")
        with pool.acquire() as vm:
            assert vm.state() is MachineState.RUNNING
    finally:
        if hidden.exists():
            hidden.rename(memory)
        pool.close()
    assert_pool_gone("p-fail", short_tmp)


def test_later_forks_of_a_vm_that_tracks_dirty_pages_write_only_those(
    builder: firec.Builder,
) -> None:
    config = builder.machine_cfg().track_dirty_pages(True).build().build()
    with firec.Machine.create(config) as parent:
        parent.start()
        assert BOOT_LINE in console_text(parent, BOOT_LINE)
        forks = [parent.fork(1) for _ in range(3)]
        try:
            assert [f.diff for f in forks] == [False, True, True]  # the first has no base
            for fork in forks:
                assert fork.snapshot is not None and fork.snapshot.type is SnapshotType.FULL
                assert fork.children[0].state() is MachineState.RUNNING
            assert parent.state() is MachineState.RUNNING
        finally:
            for fork in forks:
                fork.children[0].delete()


def test_the_counters_lose_no_count_to_threads() -> None:
    import threading

    from firec.pool.stats import Counters

    counters = Counters()

    def count() -> None:
        for _ in range(20_000):
            counters.add("hits")
            counters.add("restoring")
            counters.add("restoring", -1)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (counters.hits, counters.restoring) == (160_000, 0)
    counters.failed("OSError: boom")
    assert counters.snapshot(idle=0).failures == 1 and counters.last_error == "OSError: boom"
