"""Time from the spawn to the guest's first console line in the caller's hands.

This is the clock users see: from ``Machine.create`` until a
``Console.callback`` is given the guest's first line (firec's tiny test guest
prints ``firec-guest: booted``), against the leanest raw path doing the same
work, on the same VMM binary (firec's emulator, or the real Firecracker named
by FIRECRACKER_BIN), in the same run:

* raw API: ``subprocess.Popen`` of the VMM + a bare ``http.client`` over
  AF_UNIX (PUT /machine-config, PUT /boot-source, PUT /actions
  InstanceStart), then the line read from the VMM's stdout pipe;
* firec: ``Machine.create(config)`` + ``machine.start()``, the line handed to
  a ``Console.callback`` (called in firec's reader thread; the clock stops in
  the callback), and the same with ``AsyncMachine`` (called on the loop);
* raw config file: one ``--config-file`` spawn, the line read from stdout;
* firec config file: ``Machine.create`` / ``AsyncMachine.create`` of a config
  with ``boot_method("config-file")`` (the VM boots as it spawns).

Rounds are interleaved in a shuffled order, after a warm-up round, each run
at a random phase of the kernel's timer tick (see ``_common.interleave``).
Target: each firec path at most 1.10x its raw twin (API boots against the raw
API path, config-file boots against the raw config-file path), judged by the
median of paired ratios (``_common.paired_ratio``). Host records go beside
the VM directories unless ``FIREC_STATE_DIR`` names a place
(``_common.host_state_in``).

    python bench/first_line_bench.py [--rounds 100]
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
from firec.testing.guest import BOOT_LINE, build_test_guest
from firec.vm.console import Console

TARGET = 1.10
#: The baselines' labels.
RAW_API = "raw API (http.client)"
RAW_CONFIG_FILE = "raw --config-file"
#: Seconds the guest gets to print its first line.
LINE_TIMEOUT = 10.0

Run = Callable[[str, Path, Path], float]


def line_from_stdout(process: subprocess.Popen[bytes]) -> float:
    """Read the VMM's stdout until its first line is whole; when that was (perf_counter)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + LINE_TIMEOUT
    while b"\n" not in data:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise SystemExit(f"the guest printed no whole line within {LINE_TIMEOUT:g}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise SystemExit(f"the VMM exited before a whole line: {data!r}")
        data += chunk
    at = time.perf_counter()
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode(errors="replace")
    if line != BOOT_LINE:
        raise SystemExit(f"the guest's first line was {line!r}, not {BOOT_LINE!r}")
    return at


def raw_api(binary: str, kernel: Path, workdir: Path) -> float:
    with raw_vmm(binary, workdir, "raw") as (process, sock, started):
        raw_api_boot(process, sock, kernel)
        return line_from_stdout(process) - started


def raw_config_file(binary: str, kernel: Path, workdir: Path) -> float:
    config = write_config_file(workdir / "cf.json", kernel)
    with raw_vmm(binary, workdir, "cf", "--config-file", str(config)) as (process, _, started):
        return line_from_stdout(process) - started


class FirstLine:
    """A console callback that notes when the first line came, in whichever thread."""

    def __init__(self, event: threading.Event | asyncio.Event) -> None:
        self.event = event
        self.at: float | None = None
        self.line: str | None = None

    def __call__(self, line: str) -> None:
        if self.at is None:
            self.at = time.perf_counter()
            self.line = line
            self.event.set()

    def since(self, started: float) -> float:
        if self.at is None or self.line != BOOT_LINE:
            raise SystemExit(f"the guest's first line was {self.line!r}, not {BOOT_LINE!r}")
        return self.at - started


def sdk(boot_method: str) -> Run:
    def run(binary: str, kernel: Path, workdir: Path) -> float:
        event = threading.Event()
        seen = FirstLine(event)
        config = sdk_config(
            binary, kernel, workdir, console=Console.callback(seen), boot_method=boot_method
        )
        started = time.perf_counter()
        with firec.Machine.create(config) as machine:
            machine.start()
            if not event.wait(LINE_TIMEOUT):
                raise SystemExit(f"the guest printed no whole line within {LINE_TIMEOUT:g}s")
        return seen.since(started)

    return run


#: One event loop for every AsyncMachine round, as an application has one.
LOOP = asyncio.new_event_loop()


def sdk_async(boot_method: str) -> Run:
    def run(binary: str, kernel: Path, workdir: Path) -> float:
        async def boot() -> float:
            event = asyncio.Event()
            seen = FirstLine(event)
            config = sdk_config(
                binary, kernel, workdir, console=Console.callback(seen), boot_method=boot_method
            )
            started = time.perf_counter()
            machine = await firec.AsyncMachine.create(config)
            async with machine:
                await machine.start()
                await asyncio.wait_for(event.wait(), LINE_TIMEOUT)
            return seen.since(started)

        return LOOP.run_until_complete(boot())

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    workdir = scratch_dir("firec-fl-")
    state = host_state_in(workdir)
    try:
        binary, name = vmm_binary(workdir)
        kernel = build_test_guest()
        paths: dict[str, Run] = {
            RAW_API: raw_api,
            "firec Machine": sdk("api"),
            "firec AsyncMachine": sdk_async("api"),
            RAW_CONFIG_FILE: raw_config_file,
            "firec Machine, config file": sdk("config-file"),
            "firec AsyncMachine, config file": sdk_async("config-file"),
        }
        interleave(paths, 1, binary, kernel, workdir)  # warm up: imports, page cache
        timings = interleave(paths, args.rounds, binary, kernel, workdir, shuffle=True)
        print(
            f"spawn -> first console line at the caller, {name}, {args.rounds} rounds "
            f"(host records in {state}):"
        )
        report({k: v for k, v in timings.items() if "config" not in k}, RAW_API, TARGET)
        print("config-file boots:")
        report({k: v for k, v in timings.items() if "config" in k}, RAW_CONFIG_FILE, TARGET)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
