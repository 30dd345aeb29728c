"""Boot Firecracker over and over, send requests right after InstanceStart, count stalls.

Firecracker up to 1.2.0 (and 1.3.0, 1.3.1) can lose an API request that
follows another request's answer at once: its VMM thread clears the API
eventfd by reading it to zero *after* answering, so the notification of a
request that arrives in between is wiped out. The API thread then waits for an
answer that never comes, and the whole API stops (fresh connections time out
too). Firecracker fixed it in 1.2.1 / 1.3.2 / 1.4.0; firec's clients work
around it on the affected releases (``firec.api._request.loses_requests``).

Each boot here starts the tiny test guest and, right after InstanceStart,
sends ``--requests`` requests back to back on the kept-alive connection
(``GET /``, ``GET /machine-config``, ``GET /vm/config``, ``PATCH /vm``
Paused, ``PATCH /vm`` Resumed, over and over). A request not answered within
``--timeout`` seconds is a stall; the boot counts as failed and its VMM is killed.

Three ways to drive it:

* ``firec`` (default): ``firec.Machine`` and its client, as a user writes it;
* ``firec-unguarded``: the same with the workaround turned off;
* ``raw``: ``http.client`` over AF_UNIX, one kept-alive connection.

    FIRECRACKER_BIN=/opt/fc/firecracker-v1.0.0 python bench/stall_1_0.py --boots 2000
    FIRECRACKER_BIN=/opt/fc/firecracker-v1.0.0 python bench/stall_1_0.py --mode raw --boots 200
    ... --mode firec-unguarded --requests 20 --cpu-hogs 1   # shows what the workaround avoids

It is a soak test, not part of CI: 2,000 boots take a few minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import firec
import firec.api._sync.client
from _common import (
    UnixHTTPConnection,
    request_when_listening,
    scratch_dir,
    vmm_binary,
    wait_for_socket,
)
from firec.testing.guest import build_test_guest

REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/", None),
    ("GET", "/machine-config", None),
    ("GET", "/vm/config", None),
    ("PATCH", "/vm", {"state": "Paused"}),
    ("PATCH", "/vm", {"state": "Resumed"}),
]


def firec_boot(binary: str, kernel: Path, workdir: Path, count: int, timeout: float) -> int | None:
    """One boot through firec.Machine; the index of the request that stalled, or None."""
    config = (
        firec.Config.builder(None, kernel)
        .kernel_args("console=ttyS0")
        .firecracker_binary(binary)
        .workdir(workdir / "vms")
        .machine_cfg()
        .mem_size_mib(64)
        .build()
        .build()
    )
    calls: list[Callable[[firec.Client], object]] = [
        lambda c: c.get_instance_info(),
        lambda c: c.get_machine_config(),
        lambda c: c.get_vm_config(),
        lambda c: c.patch_vm("Paused"),
        lambda c: c.patch_vm("Resumed"),
    ]
    with firec.Machine.create(config) as machine:
        machine.client.timeout = timeout
        machine.start()
        for index in range(count):
            try:
                calls[index % len(calls)](machine.client)
            except firec.errors.TimeoutError:
                return index
    return None


class TimedConnection(UnixHTTPConnection):
    """The benchmarks' bare client, with a timeout on its socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(path)
        self.timeout = timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)


def raw_boot(binary: str, kernel: Path, workdir: Path, count: int, timeout: float) -> int | None:
    """One boot through a bare http.client connection, kept alive throughout."""
    sock, log = workdir / "raw.sock", workdir / "raw.log"
    sock.unlink(missing_ok=True)
    log.touch()
    process = subprocess.Popen(
        [binary, "--api-sock", str(sock), "--log-path", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_socket(sock, process)
        connection = TimedConnection(str(sock), timeout)

        def send(method: str, path: str, body: Any) -> int:
            payload = json.dumps(body) if body is not None else None
            return request_when_listening(connection, method, path, payload).status

        setup = [
            ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
            ("PUT", "/boot-source", {"kernel_image_path": str(kernel), "boot_args": "ttyS0"}),
            ("PUT", "/actions", {"action_type": "InstanceStart"}),
        ]
        for method, path, body in setup:
            status = send(method, path, body)
            if status != 204:
                raise SystemExit(f"{method} {path} answered {status}")
        for index in range(count):
            try:
                send(*REQUESTS[index % len(REQUESTS)])
            except TimeoutError:
                return index
        return None
    finally:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boots", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=5, help="requests after each boot")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a stall")
    parser.add_argument("--mode", choices=["firec", "firec-unguarded", "raw"], default="firec")
    parser.add_argument(
        "--cpu-hogs",
        type=int,
        default=0,
        help="busy processes to run meanwhile (a loaded host loses more requests)",
    )
    args = parser.parse_args()
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.cpu_hogs)
    ]
    try:
        return run(args)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run(args: argparse.Namespace) -> int:
    """The boots of one run; 1 if any failed."""

    workdir = scratch_dir("firec-stall-")
    try:
        binary, name = vmm_binary(workdir)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        first = version.splitlines()[0] if version else binary
        print(f"{name}: {first}; mode {args.mode}; {args.cpu_hogs} busy processes beside")
        if args.mode == "firec-unguarded":
            firec.api._sync.client.loses_requests = lambda version: False  # type: ignore[assignment]
        boot = raw_boot if args.mode == "raw" else firec_boot
        kernel = build_test_guest(workdir / "guest")
        stalls: Counter[int] = Counter()
        started = time.monotonic()
        for number in range(1, args.boots + 1):
            where = boot(binary, kernel, workdir, args.requests, args.timeout)
            if where is not None:
                stalls[where] += 1
                print(f"  boot {number}: request {where + 1} after InstanceStart stalled")
            if number % 100 == 0:
                print(f"  {number} boots, {sum(stalls.values())} failed", flush=True)
        elapsed = time.monotonic() - started
        failed = sum(stalls.values())
        print(
            f"{args.boots} boots x {args.requests} requests after InstanceStart ({args.mode}): "
            f"{failed} failed, in {elapsed:.0f} s"
        )
        if stalls:
            where = ", ".join(f"request {i + 1}: {n}" for i, n in sorted(stalls.items()))
            print(f"  stalls by request: {where}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
