"""A VM in a millisecond: a warm pool's acquire against a cold restore and a cold boot.

On the same VMM binary in one run (firec's emulator, or the real Firecracker
named by FIRECRACKER_BIN), with firec's tiny test guest (``--mem`` MiB):

* ``Pool.acquire()`` from a warm pool, timed until the caller holds a VM
  whose vCPUs run (a pooled VM is restored with its vCPUs resumed), then the
  VM is deleted off the clock and the pool refills before the next round;
* a cold ``Machine.restore`` of the same snapshot (with resume), and a cold
  boot (``Machine.create`` + ``start``, until InstanceStart is answered);
* ``machine.fork(1)`` of a running guest: how long the parent was paused,
  and the time until the child ran, with full snapshots, and with the diff
  snapshots of a guest that tracks dirty pages (its forks after the first);
* the host memory of ``--clones`` clones of the snapshot (each restored with
  the File backend, which maps the memory file privately): the sum of their
  VMMs' proportional set sizes (Pss), against one guest's memory.

Target: ``acquire()`` at most 1 ms at the median.

    python bench/pool_bench.py [--rounds 200] [--mem 128] [--clones 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import uuid
from pathlib import Path

import firec
from _common import host_state_in, scratch_dir, vmm_binary
from firec.testing.guest import BOOT_LINE, build_test_guest

TARGET_MS = 1.0


def pss_kib(pid: int) -> int:
    """The proportional set size of process ``pid`` (KiB): shared pages count once overall."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise SystemExit(f"no Pss for pid {pid}")


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(values) * 1e3:8.3f} ms   p99 {p99 * 1e3:8.3f} ms"


def fresh(config: firec.Config) -> firec.Config:
    """``config`` with an id of its own."""
    return config.replace(vm_id=f"b-{uuid.uuid4().hex[:12]}")


def booted(config: firec.Config) -> firec.Machine:
    """A running test guest that has printed its first line."""
    seen: list[str] = []
    machine = firec.Machine.create(config.replace(console=firec.Console.callback(seen.append)))
    machine.start()
    deadline = time.monotonic() + 10
    while BOOT_LINE not in seen:
        if time.monotonic() > deadline:
            raise SystemExit("the guest did not boot within 10 s")
        time.sleep(0.005)
    return machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--mem", type=int, default=128, help="guest memory, MiB")
    parser.add_argument("--clones", type=int, default=50)
    args = parser.parse_args()
    workdir = scratch_dir("firec-pool-")
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    state = host_state_in(workdir)
    binary, name = vmm_binary(workdir)
    base = (
        firec.Config.builder(None, build_test_guest())
        .kernel_args("console=ttyS0")
        .firecracker_binary(binary)
        .workdir(workdir / "vms")
        .machine_cfg()
        .mem_size_mib(args.mem)
        .build()
        .build()
    )
    with booted(base) as machine:
        snapshot = machine.snapshot(workdir / "snap")

    acquire, restore, boot = [], [], []
    with firec.Pool(snapshot, size=2, config=base.replace(vm_id="bench")) as pool:
        for _ in range(args.rounds):
            while len(pool) < pool.size:  # the refill is the pool's, not the caller's
                time.sleep(0.001)
            started = time.perf_counter()
            vm = pool.acquire()
            acquire.append(time.perf_counter() - started)
            vm.delete()
        stats = pool.stats
    for _ in range(max(10, args.rounds // 10)):
        started = time.perf_counter()
        with firec.Machine.restore(snapshot, fresh(base)):
            restore.append(time.perf_counter() - started)
        started = time.perf_counter()
        with firec.Machine.create(fresh(base)) as cold:
            cold.start()
            boot.append(time.perf_counter() - started)

    paused, child_in, diff_paused, diff_child_in = [], [], [], []
    with booted(fresh(base)) as parent:  # no dirty page tracking: full snapshots
        for _ in range(5):
            fork = parent.fork(1)
            paused.append(fork.paused_for)
            child_in.append(fork.children_in)
            for child in fork.children:
                child.delete()
    tracking = fresh(base).replace(
        machine=base.machine.model_copy(update={"track_dirty_pages": True})
    )
    with booted(tracking) as parent:  # after its first fork, diff snapshots
        for number in range(6):
            fork = parent.fork(1)
            if number:
                diff_paused.append(fork.paused_for)
                diff_child_in.append(fork.children_in)
            for child in fork.children:
                child.delete()

    clones = firec.Machine.clone(snapshot, args.clones, base.replace(vm_id="mem"))
    try:
        time.sleep(0.5)
        total = sum(pss_kib(c.pid) for c in clones if c.pid is not None)
    finally:
        for clone in clones:
            clone.delete()

    print(f"{name}, guest of {args.mem} MiB, {args.rounds} rounds (host records in {state}):")
    print(f"  Pool.acquire()         {ms(acquire)}")
    print(f"  cold Machine.restore   {ms(restore)}")
    print(f"  cold boot              {ms(boot)}")
    print(
        f"  pool: hits {stats.hits}, misses {stats.misses}, refill median "
        f"{(stats.refill_latency or 0) * 1e3:.1f} ms, failures {stats.failures}"
    )
    print(f"  fork(1), full snapshot: parent paused {ms(paused)}")
    print(f"                          child running after {ms(child_in)}")
    print(f"  fork(1), diff snapshot: parent paused {ms(diff_paused)}")
    print(f"                          child running after {ms(diff_child_in)}")
    print(
        f"  {args.clones} clones: {total / 1024:.1f} MiB of host memory (Pss) for "
        f"{args.clones * args.mem} MiB of guest memory"
    )
    median = statistics.median(acquire) * 1e3
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    print(f"  acquire() {verdict} the target of {TARGET_MS:g} ms at the median ({median:.3f} ms)")


if __name__ == "__main__":
    main()
