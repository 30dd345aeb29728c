"""What the benchmarks share: the VMM to run, a bare HTTP client over AF_UNIX, interleaved rounds.

The boot and snapshot benchmarks share their guest too: its kernel arguments
and machine (:data:`BOOT_ARGS`, :data:`MACHINE`), firec's config of it
(:func:`sdk_config`), and the raw path's spawn (:func:`raw_vmm`), API boot
(:func:`raw_api_boot`) and config file (:func:`write_config_file`).

The bench scripts run as ``python bench/<name>.py``, which puts this directory
first on ``sys.path``: they import this module as ``_common``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import firec

if TYPE_CHECKING:
    from firec.vm.console import Console

#: Seconds a VMM gets to create its API socket.
SOCKET_TIMEOUT = 10.0
#: Seconds over which the start of each run is spread at random (longer than a
#: kernel timer tick at any HZ >= 100); see :func:`interleave`.
PHASE_SPREAD = 0.010
#: The test guest's kernel arguments (its console on the serial port) and machine, on every path.
BOOT_ARGS = "console=ttyS0"
MACHINE = {"vcpu_count": 1, "mem_size_mib": 64}


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: the leanest client, the benchmarks' baseline."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def scratch_dir(prefix: str) -> Path:
    """A new directory for the run's sockets, logs, VM directories and snapshots.

    On tmpfs (``/dev/shm``) where there is one, as firec's own runtime
    directory ``/run/firec`` is on any usual host: on a disk file system every
    VM directory made and removed costs journal writes and, with ``discard``,
    blocking discards that no real deployment pays (and the raw paths, which
    reuse one socket path, would not pay them either).
    """
    shm = Path("/dev/shm")
    with open("/proc/self/mounts") as mounts:
        on_tmpfs = any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts if line.strip())
    return Path(
        tempfile.mkdtemp(prefix=prefix, dir=shm if on_tmpfs and os.access(shm, os.W_OK) else None)
    )


def host_state_in(workdir: Path) -> str:
    """Keep firec's host records (``Config.host_record``) under ``workdir``; where they go.

    firec records each VM it starts in its state directory, ``/run/firec/state``
    for root: tmpfs on any usual host, as ``/run`` is. Where ``/run`` sits on a
    disk file system instead (as in some containers), each record's creation,
    replacement and removal costs journal work that deployments do not pay
    (measured on an ext4 ``/run`` with ``discard``: ~0.1x of a 12 ms boot).
    So the records go beside the VM directories (see :func:`scratch_dir`),
    unless ``FIREC_STATE_DIR`` names a directory to measure.
    """
    if not os.environ.get("FIREC_STATE_DIR"):
        os.environ["FIREC_STATE_DIR"] = str(workdir / "state")
    return os.environ["FIREC_STATE_DIR"]


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
    connection: UnixHTTPConnection, method: str, path: str, body: str | None
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


def sdk_config(
    binary: str,
    kernel: Path,
    workdir: Path,
    *,
    vm_id: str | None = None,
    console: Console | None = None,
    boot_method: str = "api",
) -> firec.Config:
    """firec's config of the test guest (:data:`BOOT_ARGS`, :data:`MACHINE`) on ``binary``.

    Its VM directories go under ``workdir``; ``vm_id`` None is a random id.
    """
    builder = (
        firec.Config.builder(vm_id, kernel)
        .kernel_args(BOOT_ARGS)
        .firecracker_binary(binary)
        .workdir(workdir / "vms")
        .boot_method(boot_method)
    )
    if console is not None:
        builder = builder.console(console)
    return (
        builder.machine_cfg()
        .vcpu_count(MACHINE["vcpu_count"])
        .mem_size_mib(MACHINE["mem_size_mib"])
        .build()
        .build()
    )


@contextlib.contextmanager
def raw_vmm(
    binary: str,
    workdir: Path,
    name: str,
    *args: str,
    stdin: int | None = None,
    stdout: int = subprocess.PIPE,
) -> Iterator[tuple[subprocess.Popen[bytes], Path, float]]:
    """Spawn the VMM as the raw paths do, and kill it at the end.

    Its API socket and log are ``<name>.sock`` and ``<name>.log`` in
    ``workdir``, then come ``args``. Gives the process, its socket and when it
    was spawned (:func:`time.perf_counter`, read just before). At the end it
    is killed and reaped, and its socket removed.
    """
    sock, log = workdir / f"{name}.sock", workdir / f"{name}.log"
    log.touch()
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary, "--api-sock", str(sock), "--log-path", str(log), *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, sock, started
    finally:
        process.kill()
        process.wait()
        sock.unlink(missing_ok=True)


def raw_api_boot(process: subprocess.Popen[bytes], sock: Path, kernel: Path) -> None:
    """Boot the test guest over the API with the bare client: machine, boot source, start."""
    wait_for_socket(sock, process)
    connection = UnixHTTPConnection(str(sock))
    for path, body in (
        ("/machine-config", MACHINE),
        ("/boot-source", {"kernel_image_path": str(kernel), "boot_args": BOOT_ARGS}),
        ("/actions", {"action_type": "InstanceStart"}),
    ):
        response = request_when_listening(connection, "PUT", path, json.dumps(body))
        assert response.status == 204, (path, response.status)


def write_config_file(path: Path, kernel: Path) -> Path:
    """Write the test guest's ``--config-file`` to ``path``; ``path``."""
    path.write_text(
        json.dumps(
            {
                "boot-source": {"kernel_image_path": str(kernel), "boot_args": BOOT_ARGS},
                "machine-config": MACHINE,
                "drives": [],
            }
        )
    )
    return path


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
    always follows the same one's teardown).

    Before each run it sleeps ``settle`` seconds plus a random part of
    :data:`PHASE_SPREAD`. The settle time lets the kernel finish tearing down
    the previous VM. The random part matters as much: KVM's memory-slot and
    IRQ-routing updates wait for SRCU grace periods that end on the kernel's
    timer tick (4 ms at HZ=250), so an InstanceStart lasts until the first
    tick after ~6 ms of work. A run that starts a fixed time after the
    previous one (whose end was itself on a tick) always meets the tick at the
    same phase, and a client that sends InstanceStart 0.5 ms later can then
    pay a whole tick every time, or never. Starting at a random phase makes
    each run pay, on average, exactly the time it adds.
    """
    timings: dict[str, list[float]] = {label: [] for label in runs}
    order = list(runs)
    for _ in range(rounds):
        if shuffle:
            random.shuffle(order)
        for label in order:
            time.sleep(settle + random.uniform(0, PHASE_SPREAD))
            timings[label].append(runs[label](*args))
    return timings


def paired_ratio(values: list[float], baseline: list[float]) -> float:
    """The median of the per-round ratios ``values[i] / baseline[i]``.

    Both lists come from :func:`interleave`, so round ``i`` of each ran next
    to the other. Firecracker's own time is not steady: on a host whose
    kernel waits for RCU grace periods when a VM maps its memory, one boot
    takes ~6 ms and the next ~10 ms, whichever client drives it. A ratio of
    medians then jumps with how many slow boots each path drew; the median
    of paired ratios does not (mixed pairs fall on both sides alike), and
    still shows every millisecond the client itself adds.
    """
    return statistics.median(v / b for v, b in zip(values, baseline, strict=True))


def report(
    timings: Mapping[str, list[float]], baseline: str, target: float, prefix: str = "firec"
) -> None:
    """Print each run's median, its ratio of medians and its paired ratio; then the verdict.

    The verdict judges the runs whose label starts with ``prefix`` by
    :func:`paired_ratio` against the ``baseline`` run.
    """
    base = timings[baseline]
    worst = 0.0
    width = max(len(label) for label in timings)
    print(f"  {'':{width}} {'median':>9} {'min':>9} {'ratio of medians':>17} {'paired ratio':>13}")
    for label, values in timings.items():
        median = statistics.median(values)
        paired = paired_ratio(values, base)
        if label.startswith(prefix):
            worst = max(worst, paired)
        print(
            f"  {label:{width}} {median * 1e3:6.2f} ms {min(values) * 1e3:6.2f} ms"
            f" {median / statistics.median(base):16.2f}x {paired:12.2f}x"
        )
    verdict = "meets" if worst <= target else "MISSES"
    print(f"  {prefix} {verdict} the target of {target:.2f}x {baseline}: worst paired {worst:.2f}x")
