"""machine.exec through a microVM's vsock device, on firec's emulator, against the agent direct.

The emulator's guest runs the real ``firec-agent`` as a host process and
forwards each vsock ``CONNECT`` to it (``firec.testing.emulator._agent``), so
``machine.exec`` goes through the same host code as with real Firecracker:
the machine's client, the vsock handshake, the agent protocol. Measured:

* **forwarding**: ``Machine.exec(["/bin/true"])`` / ``AsyncMachine.exec``
  through the emulator's vsock device, against ``firec.agent.Client.exec`` on
  the agent's own Unix socket (an agent started the same way, on the same
  host), paired round by round: the ratio is what the vsock path (the
  emulator's relay, a Python thread pair per connection, standing in for
  Firecracker's) adds to one exec on a kept-alive connection;
* **100 VMs, one exec each, one event loop**: ``AsyncMachine.create`` and
  ``start`` of N emulated VMs with the agent, then one ``exec`` on each, all
  from one event loop (``asyncio.gather``): the time to boot them all, to
  have every agent answer, and for the N execs (each a first connection:
  handshake, hello, exec).

    python bench/exec_bench.py [--calls 300] [--vms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from _common import paired_ratio, scratch_dir
from firec import AsyncMachine, Config, Machine
from firec.agent import Client, agent_binary
from firec.testing import emulator_binary
from firec.testing.guest import build_test_guest


def config(workdir: Path, name: str, kernel: Path) -> Config:
    """An emulated VM with a vsock device and the agent (a random token)."""
    return (
        Config.builder(name, kernel)
        .firecracker_binary(emulator_binary())
        .workdir(workdir / "vms")
        .vsock(3, workdir / f"{name}.vsock")
        .agent()
        .host_record(False)
        .build()
    )


def direct_agent(workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``firec-agent --service`` on a Unix socket of its own, listening."""
    sock = workdir / "agent.sock"
    process = subprocess.Popen(
        [str(agent_binary()), "--service", "--listen", f"unix:{sock}", "--cmdline", "/dev/null"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the agent did not listen within 10s")
        time.sleep(0.001)
    return process, sock


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.2f} ms"


def bench_forwarding(workdir: Path, kernel: Path, calls: int) -> None:
    process, sock = direct_agent(workdir)
    timings: dict[str, list[float]] = {"direct": [], "Machine": [], "AsyncMachine": []}
    try:
        with Client.unix(sock) as direct, Machine.create(config(workdir, "fwd", kernel)) as vm:
            vm.start()
            vm.wait_ready(timeout=10)
            loop = asyncio.new_event_loop()
            avm = loop.run_until_complete(AsyncMachine.create(config(workdir, "afwd", kernel)))
            loop.run_until_complete(avm.start())
            loop.run_until_complete(avm.wait_ready(timeout=10))
            runs = {
                "direct": lambda: direct.exec(["/bin/true"]),
                "Machine": lambda: vm.exec(["/bin/true"]),
                "AsyncMachine": lambda: loop.run_until_complete(avm.exec(["/bin/true"])),
            }
            for run in runs.values():  # warm up: connections made, pages touched
                run()
            for _ in range(calls):
                for name in random.sample(list(runs), len(runs)):
                    started = time.perf_counter()
                    runs[name]()
                    timings[name].append(time.perf_counter() - started)
            loop.run_until_complete(avm.delete())
            loop.close()
    finally:
        process.terminate()
        process.wait()
    print(f"exec /bin/true, {calls} rounds, medians:")
    print(f"  agent's Client on its Unix socket: {ms(timings['direct'])}")
    for name in ("Machine", "AsyncMachine"):
        ratio = paired_ratio(timings[name], timings["direct"])
        print(f"  {name}.exec through the vsock device: {ms(timings[name])} ({ratio:.2f}x, paired)")


async def many_vms(workdir: Path, kernel: Path, n: int) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(AsyncMachine.create(config(workdir, f"vm{i}", kernel)) for i in range(n)),
        return_exceptions=True,
    )
    vms = [r for r in results if isinstance(r, AsyncMachine)]
    try:
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        await asyncio.gather(*(vm.start() for vm in vms))
        booted = time.perf_counter()
        await asyncio.gather(*(vm.wait_ready(timeout=60) for vm in vms))
        ready = time.perf_counter()
        outs = await asyncio.gather(*(vm.exec(["echo", vm.vm_id]) for vm in vms))
        done = time.perf_counter()
        assert [o.stdout.decode().strip() for o in outs] == [vm.vm_id for vm in vms]
    finally:
        await asyncio.gather(*(vm.delete() for vm in vms))
    print(f"{n} VMs from one event loop (AsyncMachine, emulator):")
    print(f"  create + start all: {booted - started:.2f} s")
    print(f"  every agent answering: {ready - booted:.2f} s more")
    print(f"  one exec on each, concurrently: {(done - ready) * 1e3:.0f} ms")
    print(f"  deleted all in {time.perf_counter() - done:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--only", choices=("forwarding", "vms"))
    args = parser.parse_args()
    workdir = scratch_dir("firec-exec-bench-")
    kernel = build_test_guest()
    try:
        if args.only in (None, "forwarding"):
            bench_forwarding(workdir, kernel, args.calls)
        if args.only in (None, "vms"):
            asyncio.run(many_vms(workdir, kernel, args.vms))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
