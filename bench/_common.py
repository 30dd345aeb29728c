"""What the benchmarks share: the VMM to run, a bare HTTP client over AF_UNIX, interleaved rounds.

The bench scripts run as ``python bench/<name>.py``, which puts this directory
first on ``sys.path``: they import this module as ``_common``.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

#: Seconds a VMM gets to create its API socket.
SOCKET_TIMEOUT = 10.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: the leanest client, the benchmarks' baseline."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def vmm_binary(workdir: Path) -> tuple[str, str]:
    """The VMM to measure and its name: ``FIRECRACKER_BIN``, or firec's emulator.

    The emulator is started through an executable written into ``workdir``.
    """
    real = os.environ.get("FIRECRACKER_BIN")
    if real:
        return real, "Firecracker"
    wrapper = workdir / "firecracker-emulator"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m firec.testing.emulator "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), "firec emulator"


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], *, poll: float = 0.0005) -> None:
    """Wait until ``process`` has created its API socket ``path``; exits if it never does."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the VMM did not create {path} (exit status {process.poll()})")
        time.sleep(poll)


def request_when_listening(
    connection: UnixHTTPConnection, method: str, path: str, body: str
) -> http.client.HTTPResponse:
    """Send a JSON request and read its answer, retrying while the socket does not accept yet.

    The socket file exists a moment before the VMM listens on it.
    """
    for _ in range(1000):
        try:
            connection.request(method, path, body, {"Accept": "application/json"})
            break
        except (ConnectionRefusedError, FileNotFoundError):
            connection.close()
            time.sleep(0.0005)
    response = connection.getresponse()
    response.read()
    return response


def interleave(
    runs: Mapping[str, Callable[..., float]],
    rounds: int,
    *args: object,
    shuffle: bool = False,
    settle: float = 0.0,
) -> dict[str, list[float]]:
    """Time every run ``rounds`` times, one of each per round (A B C.. A B C..).

    Each run is called with ``args`` and returns the time it measured.
    Interleaving makes a change of the machine's load during the benchmark hit
    every run alike; ``shuffle`` changes their order each round (so no run
    always follows the same one's teardown); ``settle`` sleeps before each.
    """
    timings: dict[str, list[float]] = {label: [] for label in runs}
    order = list(runs)
    for _ in range(rounds):
        if shuffle:
            random.shuffle(order)
        for label in order:
            if settle:
                time.sleep(settle)
            timings[label].append(runs[label](*args))
    return timings
