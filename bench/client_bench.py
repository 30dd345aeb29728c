"""Per-call latency of firec.Client and firec.AsyncClient against a bare http.client.

All of them talk to the same VMM in the same run: firec's emulator, or the real
Firecracker named by FIRECRACKER_BIN. The baseline is the leanest possible
client: ``http.client`` over an AF_UNIX socket with a kept-alive connection,
no parsing beyond reading the body. Target: firec at most 1.2x the baseline.

Two reference rows are not judged: httpx's own client over its Unix-socket
transport (what firec used before), and a bare asyncio round trip
(``loop.sock_sendall`` + ``loop.sock_recv``, bytes only), the floor any asyncio
client pays for waking the event loop.

Rounds of the variants are interleaved (A B C.. A B C..), so that a change in
the machine's load during the run hits every variant alike. On a small or busy
machine a round trip costs very different times depending on whether client
and VMM run on one CPU or two, and the scheduler may switch between the two
mid-run; ``--cpu N`` pins both to CPU N for steady numbers.

    python bench/client_bench.py [--calls 2000] [--rounds 7] [--cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

import firec
from _common import UnixHTTPConnection, interleave, scratch_dir, vmm_binary, wait_for_socket

TARGET = 1.2
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"


def start_vmm(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    socket_path = workdir / "api.sock"
    (workdir / "vmm.log").touch()
    binary, name = vmm_binary(workdir)
    process = subprocess.Popen(
        [binary, "--api-sock", str(socket_path), "--log-path", str(workdir / "vmm.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_socket(socket_path, process, poll=0.005)
    return process, str(socket_path), name


def sync_round(func: Callable[[], object], calls: int) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            func()
        return (time.perf_counter() - started) / calls

    return run


def async_round(
    loop: asyncio.AbstractEventLoop, func: Callable[[], Awaitable[object]], calls: int
) -> Callable[[], float]:
    async def many() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await func()
        return (time.perf_counter() - started) / calls

    return lambda: loop.run_until_complete(many())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cpu", type=int, help="pin the benchmark and the VMM to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # the VMM, started next, inherits it
    workdir = scratch_dir("firec-bench-")
    process, socket_path, name = start_vmm(workdir)
    loop = asyncio.new_event_loop()
    try:
        raw = UnixHTTPConnection(socket_path)

        def bare() -> bytes:
            raw.request("GET", "/", headers={"Accept": "application/json"})
            return raw.getresponse().read()

        client = firec.Client(socket_path)
        client.get_instance_info()  # learn the version once, as every user does
        aclient = firec.AsyncClient(socket_path)
        loop.run_until_complete(aclient.get_instance_info())
        reference = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket_path), base_url="http://localhost"
        )

        def via_httpx() -> object:
            return reference.get("/", headers={"Accept": "application/json"}).json()

        floor_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        floor_socket.connect(socket_path)
        floor_socket.setblocking(False)

        async def asyncio_floor() -> bytes:
            await loop.sock_sendall(floor_socket, REQUEST)
            return await loop.sock_recv(floor_socket, 65536)

        variants = {
            "bare http.client over AF_UNIX": sync_round(bare, args.calls),
            "firec.Client": sync_round(client.get_instance_info, args.calls),
            "firec.AsyncClient": async_round(loop, aclient.get_instance_info, args.calls),
            "httpx.Client over HTTPTransport(uds)": sync_round(via_httpx, args.calls),
            "asyncio loop.sock_* bytes only": async_round(loop, asyncio_floor, args.calls),
        }
        interleave(variants, 1)  # warm up
        times = interleave(variants, args.rounds)
        loop.run_until_complete(aclient.aclose())
        client.close()
        reference.close()
        floor_socket.close()
        raw.close()
    finally:
        loop.close()
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    median = {label: statistics.median(values) for label, values in times.items()}
    baseline = median["bare http.client over AF_UNIX"]
    pinned = "" if args.cpu is None else f", all on CPU {args.cpu}"
    print(
        f"GET / against {name}, {args.calls} calls x {args.rounds} interleaved rounds"
        f"{pinned}, median per call:"
    )
    for label, value in median.items():
        ratio = value / baseline
        if label.startswith("bare"):
            verdict = "(baseline)"
        elif label.startswith("firec"):
            verdict = "ok" if ratio <= TARGET else f"over the {TARGET}x target"
        else:
            verdict = "(reference)"
        print(f"  {label:<38} {value * 1e6:8.1f} us  {ratio:5.2f}x  {verdict}")


if __name__ == "__main__":
    main()
