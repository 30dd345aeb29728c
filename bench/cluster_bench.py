"""A VM's life through ``firec.cluster`` against local ``AsyncMachine``, in the same run.

A simulated Ray cluster on this machine (:class:`ray.cluster_utils.Cluster`:
a head with no CPU and no usable Firecracker, and ``--hosts`` nodes, each
with its own host settings file: name, capacity, VMM, state, runtime and
snapshot directories under a scratch directory). Every VM is firec's tiny
test guest (1 vCPU, 128 MiB, ``console=ttyS0``) on the same VMM binary:
firec's emulator, or the real Firecracker named by FIRECRACKER_BIN.

One VM's latency is its way up (created and booted: InstanceStart
answered) and its ``delete``, timed by the driver:

* cluster: ``AsyncCluster.run(config)`` (the host's VMM, since the config
  names none) and ``vm.delete()``: two actor calls, each run by the host
  actor on its own ``AsyncMachine``;
* cluster, create + start: ``AsyncCluster.create(config)``, ``vm.start()``
  and ``vm.delete()``: three actor calls (what ``run`` saves);
* local: ``firec.AsyncMachine.create(config)`` (the same VMM named in the
  config), ``start()``, ``delete()`` in this process.

Measured:

* the bare round trip of an actor call (``await host.info.remote()``), and
  ``state()`` of a running VM through the cluster and locally (``--calls``
  each): what one operation costs on its way through Ray;
* ``--sequential`` VMs of each path one at a time, interleaved in pairs in
  a shuffled order, each after a random delay (see ``_common.interleave``):
  the cleanest per-VM overhead, with the difference paired VM by VM;
* ``--vms`` VMs of each path with ``--concurrency`` in flight, in rounds of
  ``--round`` VMs, one round of each path after the other in a shuffled
  order (so a change of the host's load hits both alike): median and p99 per
  VM, the throughput, and the difference paired round by round.

VMs go to the hosts in turn (``host=...``), unless
``--place cluster`` leaves it to the cluster's placement (bin-packing: the
first host takes them all while it has room). Each host has room for
``--concurrency`` VMs. Target: the cluster adds at most 2 ms per VM at the
median (judged on the paired difference of the concurrent run).

    python bench/cluster_bench.py [--vms 200] [--hosts 4] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import firec
from _common import PHASE_SPREAD, host_state_in, scratch_dir, vmm_binary
from firec.testing.guest import build_test_guest

TARGET_MS = 2.0
#: The label of the path that creates, then starts, in two calls.
CREATE_START = "cluster, create+start"
MEM_MIB = 128

#: A VM's life through one path: (up: created and booted, delete) seconds.
Life = tuple[float, float]
PHASES = ("up", "delete")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:8.2f} ms   p99 {p99(values) * 1e3:8.2f} ms"


def write_settings(path: Path, **settings: object) -> Path:
    """A host settings file (TOML; JSON's quoting of strings is TOML's)."""
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def start_ray(workdir: Path, binary: str, emulated: bool, hosts: int, room: int) -> Any:
    """A simulated Ray cluster: a head without a usable VMM, and ``hosts`` firec hosts."""
    from ray.cluster_utils import Cluster

    # Ray's files, and the address file it writes for a bare ray.init() (and removes
    # at the end), in the scratch directory: not /tmp/ray, where other Ray users are.
    os.environ["RAY_TMPDIR"] = str(workdir)
    head = write_settings(workdir / "head.toml", name="head", firecracker="/nonexistent")
    ray_cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "temp_dir": str(workdir / "ray"),
            "env_vars": {"FIREC_HOST_CONFIG": str(head)},
        },
    )
    try:
        for number in range(hosts):
            name = f"h{number}"
            home = workdir / name
            home.mkdir()
            settings = write_settings(
                home / "host.toml",
                name=name,
                vcpus=room,
                memory_mib=room * MEM_MIB,
                firecracker=binary,
                needs_kvm=not emulated,
                state_dir=str(home / "state"),
                runtime_dir=str(home / "run"),
                snapshot_dir=str(home / "snaps"),
            )
            ray_cluster.add_node(num_cpus=1, env_vars={"FIREC_HOST_CONFIG": str(settings)})
    except BaseException:
        ray_cluster.shutdown()
        raise
    return ray_cluster


class Paths:
    """The two ways to live a VM's life, timed per phase.

    ``hosts``: the hosts the cluster's VMs go to in turn; ``turns`` False lets
    the cluster place them.
    """

    def __init__(
        self,
        cluster: Any,
        config: firec.Config,
        local: firec.Config,
        hosts: list[str],
        turns: bool,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.local_config = local
        self.hosts = hosts
        self.turns = turns
        self.turn = itertools.count()

    def _host(self) -> str | None:
        return self.hosts[next(self.turn) % len(self.hosts)] if self.turns else None

    async def through_cluster(self) -> Life:
        config = self.config.replace(vm_id=f"c-{uuid.uuid4().hex[:12]}")
        host = self._host()
        return await timed_life(lambda: self.cluster.run(config, host=host))

    async def through_cluster_create_start(self) -> Life:
        config = self.config.replace(vm_id=f"c-{uuid.uuid4().hex[:12]}")
        host = self._host()
        return await timed_life(lambda: self.cluster.create(config, host=host), start=True)

    async def local(self) -> Life:
        config = self.local_config.replace(vm_id=f"l-{uuid.uuid4().hex[:12]}")
        return await timed_life(lambda: firec.AsyncMachine.create(config), start=True)


async def timed_life(make: Callable[[], Awaitable[Any]], start: bool = False) -> Life:
    """How long ``make()`` (and ``start()`` of what it made, if ``start``), then ``delete()``."""
    t0 = time.perf_counter()
    vm = await make()
    try:
        if start:
            await vm.start()
        t1 = time.perf_counter()
    finally:
        await vm.delete()
    return t1 - t0, time.perf_counter() - t1


async def batch(life: Callable[[], Awaitable[Life]], count: int, width: int) -> list[Life]:
    """``count`` lives, ``width`` at a time, in the order they were started."""
    lives: list[Life | None] = [None] * count
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            lives[number] = await life()

    await asyncio.gather(*(worker() for _ in range(min(width, count))))
    return [life for life in lives if life is not None]


async def actor_round_trip(cluster: Any, calls: int) -> list[float]:
    """Times of ``await host.info.remote()`` on the first usable host, one after another."""
    import ray

    from firec.cluster._ray import host_name

    usable = [h for h in await cluster.hosts() if h.usable]
    handle = ray.get_actor(host_name(usable[0].node_id), namespace=cluster.namespace)
    times = []
    for _ in range(calls + 10):
        started = time.perf_counter()
        await handle.info.remote()
        times.append(time.perf_counter() - started)
    return times[10:]


async def one_call(paths: Paths, calls: int) -> dict[str, list[float]]:
    """Times of ``state()`` on a running VM, through the cluster and locally, interleaved."""
    vm = await paths.cluster.create(
        paths.config.replace(vm_id=f"s-{uuid.uuid4().hex[:12]}"), host=paths.hosts[0]
    )
    machine = None
    try:
        await vm.start()
        machine = await firec.AsyncMachine.create(
            paths.local_config.replace(vm_id=f"s-{uuid.uuid4().hex[:12]}")
        )
        await machine.start()
        states = {"cluster": vm.state, "local": machine.state}
        times: dict[str, list[float]] = {label: [] for label in states}
        for number in range(calls + 10):
            for label, state in states.items():
                started = time.perf_counter()
                await state()
                if number >= 10:
                    times[label].append(time.perf_counter() - started)
        return times
    finally:
        await vm.delete()
        if machine is not None:
            await machine.delete()


async def measure(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    runs = {
        "cluster": paths.through_cluster,
        CREATE_START: paths.through_cluster_create_start,
        "local": paths.local,
    }
    # Warm-up: each host's first VM (imports, page cache), and the local path's.
    await batch(paths.through_cluster, 2 * len(paths.hosts), len(paths.hosts))
    await batch(paths.local, 2, 1)

    round_trip = await actor_round_trip(paths.cluster, args.calls)
    state = await one_call(paths, args.calls)

    sequential: dict[str, list[Life]] = {label: [] for label in runs}
    order = list(runs)
    for _ in range(args.sequential):
        random.shuffle(order)
        for label in order:
            await asyncio.sleep(random.uniform(0, PHASE_SPREAD))
            sequential[label].append(await runs[label]())

    concurrent: dict[str, list[Life]] = {label: [] for label in runs}
    walls: dict[str, list[float]] = {label: [] for label in runs}
    medians: dict[str, list[float]] = {label: [] for label in runs}
    left = args.vms
    while left:
        count = min(args.round, left)
        left -= count
        random.shuffle(order)
        for label in order:
            started = time.perf_counter()
            lives = await batch(runs[label], count, args.concurrency)
            walls[label].append(time.perf_counter() - started)
            concurrent[label] += lives
            medians[label].append(statistics.median(sum(life) for life in lives))
    return {
        "round_trip": round_trip,
        "state": state,
        "sequential": sequential,
        "concurrent": concurrent,
        "walls": walls,
        "medians": medians,
    }


def phase_medians(lives: list[Life]) -> str:
    return "  ".join(
        f"{phase} {statistics.median(life[i] for life in lives) * 1e3:6.2f}"
        for i, phase in enumerate(PHASES)
    )


def report(args: argparse.Namespace, name: str, state: str, found: dict[str, Any]) -> None:
    print(
        f"one VM up (created and booted) and deleted, {name}, {args.hosts} simulated hosts "
        f"(placement: {args.place}), guest of {MEM_MIB} MiB (local host records in {state}):"
    )
    print(f"  actor call round trip (await host.info.remote())  {ms(found['round_trip'])}")
    cluster_state, local_state = found["state"]["cluster"], found["state"]["local"]
    print(f"  state() of a running VM: through the cluster     {ms(cluster_state)}")
    print(f"                           local AsyncMachine      {ms(local_state)}")

    sequential = found["sequential"]
    print(f"  one at a time, {args.sequential} VMs of each, paired:")
    for label, lives in sequential.items():
        total = [sum(life) for life in lives]
        print(f"    {label:22} {ms(total)}   ({phase_medians(lives)} ms)")
    for label in ("cluster", CREATE_START):
        pairs = list(zip(sequential[label], sequential["local"], strict=True))
        paired = statistics.median(sum(c) - sum(local) for c, local in pairs) * 1e3
        phases = "  ".join(
            f"{phase} {statistics.median(c[i] - local[i] for c, local in pairs) * 1e3:+.2f}"
            for i, phase in enumerate(PHASES)
        )
        print(f"    {label} - local, paired VM by VM: median {paired:+.2f} ms   ({phases} ms)")

    concurrent, walls = found["concurrent"], found["walls"]
    rounds = len(walls["cluster"])
    print(
        f"  {args.vms} VMs of each, {args.concurrency} in flight, "
        f"{rounds} interleaved rounds of up to {args.round}:"
    )
    for label, lives in concurrent.items():
        total = [sum(life) for life in lives]
        rate = len(lives) / sum(walls[label])
        print(f"    {label:22} {ms(total)}   {rate:6.1f} VMs/s   ({phase_medians(lives)} ms)")
        slowest = max(lives, key=sum)
        phases = "  ".join(f"{p} {t * 1e3:.1f}" for p, t in zip(PHASES, slowest, strict=True))
        print(f"    {'':22} the slowest: {sum(slowest) * 1e3:.1f} ms ({phases} ms)")
    medians = found["medians"]
    local_median = statistics.median(sum(life) for life in concurrent["local"])
    differences = {}
    for label in ("cluster", CREATE_START):
        by_round = [c - loc for c, loc in zip(medians[label], medians["local"], strict=True)]
        label_median = statistics.median(sum(life) for life in concurrent[label])
        differences[label] = statistics.median(by_round) * 1e3
        print(
            f"    {label} - local at the median: {(label_median - local_median) * 1e3:+.2f} ms; "
            f"paired round by round: {differences[label]:+.2f} ms"
        )
    difference = differences["cluster"]
    verdict = "meets" if difference <= TARGET_MS else "MISSES"
    print(f"  the cluster {verdict} the target of +{TARGET_MS:g} ms per VM at the median")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    from firec.cluster import AsyncCluster

    binary, name = vmm_binary(workdir)
    emulated = not os.environ.get("FIRECRACKER_BIN")
    kernel = build_test_guest()
    room = args.concurrency if args.place == "turns" else args.concurrency * args.hosts
    ray_cluster = start_ray(workdir, binary, emulated, args.hosts, room)
    try:
        state = host_state_in(workdir)
        config = (
            firec.Config.builder(None, kernel)
            .kernel_args("console=ttyS0")
            .machine_cfg()
            .vcpu_count(1)
            .mem_size_mib(MEM_MIB)
            .build()
            .build()
        )
        local = config.replace(firecracker_binary=Path(binary), workdir=workdir / "local")
        cluster = await AsyncCluster.connect(ray_cluster.address)
        stopped = False
        try:
            hosts = [h for h in await cluster.hosts() if h.usable]
            if len(hosts) != args.hosts:
                raise SystemExit(f"{len(hosts)} usable hosts of {args.hosts}")
            names = [h.name for h in hosts]
            paths = Paths(cluster, config, local, names, turns=args.place == "turns")
            found = await measure(args, paths)
            left = await cluster.stop_hosts()
            stopped = True
            if left:
                raise SystemExit(f"the hosts still had VMs: {left}")
        finally:
            if not stopped:
                with contextlib.suppress(Exception):
                    await cluster.stop_hosts()
            await cluster.close()
        report(args, name, state, found)
    finally:
        ray_cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=200, help="VMs of each path, concurrently")
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--round", type=int, default=25, help="VMs of each path per round")
    parser.add_argument("--sequential", type=int, default=50, help="VMs of each, one at a time")
    parser.add_argument("--calls", type=int, default=500, help="actor calls timed")
    parser.add_argument("--place", choices=("turns", "cluster"), default="turns")
    args = parser.parse_args()
    workdir = scratch_dir("fcl-")
    try:
        asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
