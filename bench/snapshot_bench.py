"""Restore latency: firec against a raw load + resume, and the wall time of 10 clones.

One snapshot of firec's tiny test guest is taken, then restored again and
again, on the same VMM binary in the same run (firec's emulator, or the real
Firecracker named by FIRECRACKER_BIN), each path interleaved with the others:

* raw: ``subprocess.Popen`` + a bare ``http.client`` over AF_UNIX sending one
  ``PUT /snapshot/load`` with ``resume_vm`` (``mem_backend`` or, on 1.0,
  ``mem_file_path``), timed until Firecracker answers 204;
* firec: ``Machine.restore(snapshot, config)`` (checks, VM directory, spawn,
  readiness, load with resume), and the same with ``AsyncMachine``.

Rounds are interleaved in a shuffled order, each after a settle time and at
a random phase of the kernel tick (see ``_common.interleave``). Target: firec
at most 1.10x raw, by the median of paired ratios. Then the wall time to start 10 clones with
``Snapshot.aclone`` (one event loop) and ``Snapshot.clone`` (threads).

    python bench/snapshot_bench.py [--rounds 100] [--clones 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import firec
from _common import (
    MACHINE,
    UnixHTTPConnection,
    host_state_in,
    interleave,
    raw_vmm,
    report,
    request_when_listening,
    scratch_dir,
    sdk_config,
    vmm_binary,
    wait_for_socket,
)
from firec.api.versions import Version
from firec.snapshots._format import probe
from firec.snapshots.snapshot import Snapshot
from firec.testing.guest import build_test_guest
from firec.vm.state import MachineState

TARGET = 1.10
#: Seconds between two measurements: the previous VM's teardown must not slow the next.
SETTLE = 0.05
MEM_MIB = MACHINE["mem_size_mib"]


def take_snapshot(binary: str, kernel: Path, workdir: Path) -> Snapshot:
    with firec.Machine.create(sdk_config(binary, kernel, workdir)) as machine:
        machine.start()
        return machine.snapshot(workdir / "snap")


def raw(binary: str, snap: Snapshot, workdir: Path) -> float:
    body: dict[str, object] = {"snapshot_path": str(snap.state_file), "resume_vm": True}
    if probe(binary).version >= Version(1, 1, 0):
        body["mem_backend"] = {"backend_type": "File", "backend_path": str(snap.memory_file)}
    else:
        body["mem_file_path"] = str(snap.memory_file)
    payload = json.dumps(body)
    quiet = subprocess.DEVNULL
    with raw_vmm(binary, workdir, "raw", stdin=quiet, stdout=quiet) as (process, sock, started):
        wait_for_socket(sock, process)
        connection = UnixHTTPConnection(str(sock))
        response = request_when_listening(connection, "PUT", "/snapshot/load", payload)
        elapsed = time.perf_counter() - started
        assert response.status == 204, response.status
        connection.close()
        return elapsed


def sdk(binary: str, snap: Snapshot, workdir: Path) -> float:
    config = sdk_config(binary, snap.kernel_image or Path("/"), workdir, vm_id="bench-restore")
    started = time.perf_counter()
    machine = firec.Machine.restore(snap, config)
    elapsed = time.perf_counter() - started
    with machine:
        assert machine.state() is MachineState.RUNNING
    return elapsed


#: One event loop for every AsyncMachine round, as an application has one.
LOOP = asyncio.new_event_loop()


def sdk_async(binary: str, snap: Snapshot, workdir: Path) -> float:
    config = sdk_config(binary, snap.kernel_image or Path("/"), workdir, vm_id="bench-arestore")

    async def restore() -> float:
        started = time.perf_counter()
        machine = await firec.AsyncMachine.restore(snap, config)
        elapsed = time.perf_counter() - started
        async with machine:
            assert await machine.state() is MachineState.RUNNING
        return elapsed

    return LOOP.run_until_complete(restore())


def clones_async(snap: Snapshot, config: firec.Config, count: int) -> float:
    async def run() -> float:
        started = time.perf_counter()
        machines = await firec.AsyncMachine.clone(snap, count, config)
        elapsed = time.perf_counter() - started
        try:
            states = await asyncio.gather(*(m.state() for m in machines))
            assert set(states) == {MachineState.RUNNING}, states
        finally:
            await asyncio.gather(*(m.delete() for m in machines))
        return elapsed

    return LOOP.run_until_complete(run())


def clones_sync(snap: Snapshot, config: firec.Config, count: int) -> float:
    started = time.perf_counter()
    machines = firec.Machine.clone(snap, count, config)
    elapsed = time.perf_counter() - started
    try:
        assert {m.state() for m in machines} == {MachineState.RUNNING}
    finally:
        for machine in machines:
            machine.delete()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--clones", type=int, default=10)
    args = parser.parse_args()
    workdir = scratch_dir("firec-sb-")
    state = host_state_in(workdir)
    try:
        binary, name = vmm_binary(workdir)
        kernel = build_test_guest()
        snap = take_snapshot(binary, kernel, workdir)
        paths: dict[str, Callable[[str, Snapshot, Path], float]] = {
            "raw load+resume (http.client)": raw,
            "firec Machine.restore": sdk,
            "firec AsyncMachine.restore": sdk_async,
        }
        interleave(paths, 1, binary, snap, workdir)  # warm up: imports, probe, page cache
        timings = interleave(paths, args.rounds, binary, snap, workdir, shuffle=True, settle=SETTLE)
        version = probe(binary).version
        print(
            f"spawn -> snapshot loaded and resumed, {name} {version}, {MEM_MIB} MiB guest, "
            f"{args.rounds} rounds (host records in {state}):"
        )
        report(timings, "raw load+resume (http.client)", TARGET)
        config = sdk_config(binary, kernel, workdir, vm_id="bench-clone")
        for label, clone in (("aclone (one loop)", clones_async), ("clone (sync)", clones_sync)):
            walls = [clone(snap, config, args.clones) for _ in range(3)]
            print(
                f"{args.clones} clones, {label}: {statistics.median(walls) * 1000:.0f} ms wall "
                f"(median of 3, min {min(walls) * 1000:.0f})"
            )
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
