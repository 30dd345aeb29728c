"""Per-call latency of firec.Client and firec.AsyncClient against a bare http.client.

All three talk to the same VMM in the same run: firec's emulator, or the real
Firecracker named by FIRECRACKER_BIN. The baseline is the leanest possible
client: ``http.client`` over an AF_UNIX socket with a kept-alive connection,
no parsing beyond reading the body. Target: firec at most 1.2x the baseline.

    python bench/client_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import firec

TARGET = 1.2


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the baseline."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def start_vmm(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    socket_path = str(workdir / "api.sock")
    (workdir / "vmm.log").touch()
    binary = os.environ.get("FIRECRACKER_BIN")
    command = [binary] if binary else [sys.executable, "-m", "firec.testing.emulator"]
    process = subprocess.Popen(
        [*command, "--api-sock", socket_path, "--log-path", str(workdir / "vmm.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(socket_path):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the VMM did not start")
        time.sleep(0.005)
    return process, socket_path, "Firecracker" if binary else "firec emulator"


def per_call(func: Callable[[], object], calls: int) -> float:
    """Median seconds per call over 5 rounds of ``calls`` calls."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            func()
        rounds.append((time.perf_counter() - started) / calls)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="firec-bench-"))
    process, socket_path, name = start_vmm(workdir)
    try:
        raw = UnixHTTPConnection(socket_path)

        def bare() -> bytes:
            raw.request("GET", "/", headers={"Accept": "application/json"})
            return raw.getresponse().read()

        client = firec.Client(socket_path)
        client.get_instance_info()  # learn the version once, as every user does

        async def async_calls(calls: int) -> float:
            async with firec.AsyncClient(socket_path) as aclient:
                await aclient.get_instance_info()
                rounds = []
                for _ in range(5):
                    started = time.perf_counter()
                    for _ in range(calls):
                        await aclient.get_instance_info()
                    rounds.append((time.perf_counter() - started) / calls)
                return statistics.median(rounds)

        per_call(bare, 200)  # warm up
        baseline = per_call(bare, args.calls)
        sync = per_call(client.get_instance_info, args.calls)
        asynchronous = asyncio.run(async_calls(args.calls))
        client.close()
        raw.close()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"GET / against {name}, {args.calls} calls x 5 rounds, median per call:")
    print(f"  bare http.client over AF_UNIX  {baseline * 1e6:8.1f} us  (baseline)")
    for label, value in (("firec.Client", sync), ("firec.AsyncClient", asynchronous)):
        ratio = value / baseline
        verdict = "ok" if ratio <= TARGET else f"over the {TARGET}x target"
        print(f"  {label:<30} {value * 1e6:8.1f} us  {ratio:5.2f}x  {verdict}")


if __name__ == "__main__":
    main()
