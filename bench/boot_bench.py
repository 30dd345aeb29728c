"""Time from spawn, through InstanceStart, to the guest's first serial byte.

Three paths boot firec's tiny test guest on the same VMM binary in the same
run (firec's emulator, or the real Firecracker named by FIRECRACKER_BIN):

* raw API: ``subprocess.Popen`` + a bare ``http.client`` over AF_UNIX
  (PUT /machine-config, PUT /boot-source, PUT /actions), then read stdout;
* raw config file: one ``--config-file`` spawn, then read stdout;
* firec: ``Machine.create(config)`` + ``machine.start()``, the console to
  ``Console.stream`` (its bytes, read by a thread), and the same with
  ``AsyncMachine`` (read by the loop).

Rounds are interleaved in a shuffled order, after a warm-up round. Target:
firec at most 1.10x the raw API path, judged by the median of paired
ratios (see ``_common.paired_ratio``: Firecracker's own boot time is
bimodal on some hosts). Then 50 concurrent boots from one ``AsyncMachine``
event loop, counting the threads while they run.

    python bench/boot_bench.py [--rounds 100] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import firec
from _common import (
    host_state_in,
    interleave,
    raw_api_boot,
    raw_vmm,
    report,
    scratch_dir,
    sdk_config,
    vmm_binary,
    write_config_file,
)
from firec.testing.guest import build_test_guest
from firec.vm.console import Console

TARGET = 1.10


def first_byte(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], timeout)[0]:
        raise SystemExit("the guest printed nothing")
    os.read(process.stdout.fileno(), 1)


def raw_api(binary: str, kernel: Path, workdir: Path) -> float:
    with raw_vmm(binary, workdir, "raw") as (process, sock, started):
        raw_api_boot(process, sock, kernel)
        first_byte(process)
        return time.perf_counter() - started


def raw_config_file(binary: str, kernel: Path, workdir: Path) -> float:
    config = write_config_file(workdir / "cf.json", kernel)
    with raw_vmm(binary, workdir, "cf", "--config-file", str(config)) as (process, _, started):
        first_byte(process)
        return time.perf_counter() - started


def stream_config(
    binary: str, kernel: Path, workdir: Path, on_output: Callable[[bytes], object]
) -> firec.Config:
    return sdk_config(binary, kernel, workdir, console=Console.stream(on_output))


def sdk(binary: str, kernel: Path, workdir: Path) -> float:
    printed = threading.Event()
    config = stream_config(binary, kernel, workdir, lambda data: printed.set())
    started = time.perf_counter()
    with firec.Machine.create(config) as machine:
        machine.start()
        if not printed.wait(10):
            raise SystemExit("the guest printed nothing")
        return time.perf_counter() - started


#: One event loop for every AsyncMachine round, as an application has one.
LOOP = asyncio.new_event_loop()


def sdk_async(binary: str, kernel: Path, workdir: Path) -> float:
    async def boot() -> float:
        printed = asyncio.Event()
        config = stream_config(binary, kernel, workdir, lambda data: printed.set())
        started = time.perf_counter()
        machine = await firec.AsyncMachine.create(config)
        async with machine:
            await machine.start()
            await asyncio.wait_for(printed.wait(), 10)
            return time.perf_counter() - started

    return LOOP.run_until_complete(boot())


async def concurrent_boots(
    binary: str, kernel: Path, workdir: Path, count: int
) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    booted = 0
    all_booted = loop.create_future()

    def on_output(vm: int) -> Callable[[bytes], None]:
        def first_byte(data: bytes) -> None:
            nonlocal booted
            if vm in printed:
                return
            printed.add(vm)
            booted += 1
            if booted == count and not all_booted.done():
                all_booted.set_result(None)

        return first_byte

    printed: set[int] = set()
    configs = [
        stream_config(binary, kernel, workdir, on_output(i)).replace(vm_id=f"bench-{i}")
        for i in range(count)
    ]
    threads = threading.active_count()
    started = time.perf_counter()
    machines = await asyncio.gather(*(firec.AsyncMachine.create(c) for c in configs))
    try:
        await asyncio.gather(*(m.start() for m in machines))
        await asyncio.wait_for(all_booted, 60)
        elapsed = time.perf_counter() - started
        extra_threads = threading.active_count() - threads
    finally:
        await asyncio.gather(*(m.delete() for m in machines))
    return elapsed, extra_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    workdir = scratch_dir("firec-bb-")
    state = host_state_in(workdir)
    try:
        binary, name = vmm_binary(workdir)
        kernel = build_test_guest()
        paths: dict[str, Callable[[str, Path, Path], float]] = {
            "raw API (http.client)": raw_api,
            "raw --config-file": raw_config_file,
            "firec Machine": sdk,
            "firec AsyncMachine": sdk_async,
        }
        interleave(paths, 1, binary, kernel, workdir)  # warm up: imports, page cache
        timings = interleave(paths, args.rounds, binary, kernel, workdir, shuffle=True)
        print(
            f"spawn -> InstanceStart -> first serial byte, {name}, {args.rounds} rounds "
            f"(host records in {state}):"
        )
        report(timings, "raw API (http.client)", TARGET)
        elapsed, extra = asyncio.run(concurrent_boots(binary, kernel, workdir, args.concurrent))
        print(
            f"{args.concurrent} concurrent boots from one AsyncMachine loop: "
            f"{elapsed * 1e3:.0f} ms wall, {elapsed / args.concurrent * 1e3:.1f} ms per VM, "
            f"{extra} extra threads"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
