"""firec-agent and its client against the raw floor: exec round trips, concurrency, 1 GiB both ways.

The agent runs as a host process on a Unix socket (as it does for the tests
and behind firec's emulator), so this measures the agent and the client,
not a guest. The floor is a bare C server on the same kind of socket,
compiled here with ``cc``:

* **exec**: one byte in, ``fork`` + ``execve("/bin/true")`` + ``waitpid``,
  one byte out, on a kept-alive connection; against ``Client.exec(["/bin/true"])``
  and ``AsyncClient.exec``, each round one of each (target: at most 1.5x);
* **100 concurrent execs**: ``asyncio.gather`` of 100 ``AsyncClient.exec``
  (reported; the floor does them one after another);
* **1 GiB up and down**: the floor reads a file and writes it to the socket, or
  the socket to a file, with 1 MiB buffers; against ``files.upload`` and
  ``files.download`` (target: at least 80% of the floor's throughput);
* **start**: from spawning the agent to a connection it accepts, against the
  same for the floor server (reported; the goal is 5 ms).

Files live in ``/dev/shm`` where there is one, so the disk does not decide.

    python bench/agent_bench.py [--calls 300] [--rounds 5] [--cpu N] [--only start|exec|copy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import paired_ratio, scratch_dir
from firec.agent import AsyncClient, Client, agent_binary

EXEC_TARGET = 1.5
COPY_TARGET = 0.8
GIB = 1 << 30
CHUNK = 1 << 20

RAW_SERVER = r"""
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char buf[1 << 20];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* raw start SOCKET PROGRAM ARGS...: spawn it, connect until it accepts; the microseconds */
static int start(char **argv) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, argv[2]);
    unlink(argv[2]);
    pid_t pid;
    extern char **environ;
    double t0 = now();
    if (posix_spawn(&pid, argv[3], 0, 0, argv + 3, environ)) return 1;
    for (;;) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&sun, sizeof sun) == 0) {
            printf("%.1f\n", (now() - t0) * 1e6);
            close(s);
            break;
        }
        close(s);
        if (now() - t0 > 5) return 1;
    }
    kill(pid, SIGKILL);
    waitpid(pid, 0, 0);
    return 0;
}

int main(int argc, char **argv) {
    /* raw MODE SOCKET [FILE]: exec, sink (socket to FILE) or source (FILE to socket) */
    if (!strcmp(argv[1], "start")) return start(argv);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, argv[2]);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(argv[2]);
    if (bind(s, (struct sockaddr *)&sun, sizeof sun) || listen(s, 8)) return 1;
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        if (!strcmp(argv[1], "exec")) {
            char b;
            while (read(c, &b, 1) == 1) {
                pid_t pid = fork();
                if (pid == 0) {
                    char *av[] = {"/bin/true", 0};
                    execv(av[0], av);
                    _exit(127);
                }
                int st;
                waitpid(pid, &st, 0);
                if (write(c, "k", 1) != 1) break;
            }
        } else if (!strcmp(argv[1], "sink")) {
            int f = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ssize_t n;
            while ((n = read(c, buf, sizeof buf)) > 0)
                for (ssize_t w = 0; w < n;) w += write(f, buf + w, n - w);
            close(f);
            (void)!write(c, "k", 1);
        } else {
            int f = open(argv[3], O_RDONLY);
            ssize_t n;
            while ((n = read(f, buf, sizeof buf)) > 0)
                for (ssize_t w = 0; w < n;) w += write(c, buf + w, n - w);
            close(f);
        }
        close(c);
    }
}
"""


def build_raw(workdir: Path) -> Path:
    source = workdir / "raw.c"
    source.write_text(RAW_SERVER)
    binary = workdir / "raw"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def connect_when_listening(path: Path, deadline: float) -> socket.socket:
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listened on {path}") from None


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_time(raw: Path, argv: list[str], path: Path) -> float:
    """Seconds from spawning ``argv`` to a connection accepted on ``path`` (timed in C)."""
    result = subprocess.run(
        [str(raw), "start", str(path), *argv], capture_output=True, text=True, check=True
    )
    return float(result.stdout) / 1e6


def raw_copy(raw: Path, workdir: Path, mode: str, file: Path, other: Path) -> float:
    path = workdir / f"raw-{mode}.sock"
    server = spawn([str(raw), mode, str(path), str(file)])
    try:
        sock = connect_when_listening(path, time.monotonic() + 5)
        started = time.perf_counter()
        if mode == "sink":  # upload: other -> socket -> file
            with open(other, "rb") as source:
                while block := source.read(CHUNK):
                    sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
        else:  # download: file -> socket -> other
            view = memoryview(bytearray(CHUNK))
            with open(other, "wb") as target:
                while got := sock.recv_into(view):
                    target.write(view[:got])
        elapsed = time.perf_counter() - started
        sock.close()
        return elapsed
    finally:
        server.terminate()
        server.wait()


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:7.3f} ms"


async def exec_rounds(agent_sock: Path, raw_sock: Path, calls: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {
        "raw fork+exec echo": [],
        "Client.exec": [],
        "AsyncClient.exec": [],
    }
    raw = connect_when_listening(raw_sock, time.monotonic() + 5)
    with Client.unix(agent_sock) as client:
        async with AsyncClient.unix(agent_sock) as aclient:
            for _ in range(20):  # warm up: connections made, code paths hot
                client.exec(["/bin/true"])
                await aclient.exec(["/bin/true"])
            for _ in range(calls):
                t = time.perf_counter()
                raw.sendall(b"x")
                raw.recv(1)
                times["raw fork+exec echo"].append(time.perf_counter() - t)
                t = time.perf_counter()
                client.exec(["/bin/true"])
                times["Client.exec"].append(time.perf_counter() - t)
                t = time.perf_counter()
                await aclient.exec(["/bin/true"])
                times["AsyncClient.exec"].append(time.perf_counter() - t)
    raw.close()
    return times


async def concurrent(agent_sock: Path, n: int, rounds: int) -> list[float]:
    walls = []
    async with AsyncClient.unix(agent_sock, pool_size=n) as client:
        await asyncio.gather(*(client.exec(["/bin/true"]) for _ in range(n)))  # warm the pool
        for _ in range(rounds):
            t = time.perf_counter()
            results = await asyncio.gather(*(client.exec(["/bin/true"]) for _ in range(n)))
            walls.append(time.perf_counter() - t)
            assert all(r.exit_code == 0 for r in results)
    return walls


def bench_start(agent: Path, raw: Path, workdir: Path) -> None:
    starts: dict[str, list[float]] = {"firec-agent": [], "raw C server": []}
    sock = workdir / "start.sock"
    for _ in range(50):
        starts["firec-agent"].append(
            start_time(raw, [str(agent), "--service", "--listen", f"unix:{sock}"], sock)
        )
        starts["raw C server"].append(start_time(raw, [str(raw), "exec", str(sock)], sock))
    print("\nspawn to first accepted connection (50 runs, timed in C with posix_spawn):")
    for label, values in starts.items():
        print(f"  {label:18} median {median_ms(values)}  min {min(values) * 1e3:7.3f} ms")


def bench_exec(agent_sock: Path, raw: Path, workdir: Path, calls: int) -> None:
    raw_sock = workdir / "raw-exec.sock"
    raw_process = spawn([str(raw), "exec", str(raw_sock)])
    try:
        times = asyncio.run(exec_rounds(agent_sock, raw_sock, calls))
    finally:
        raw_process.terminate()
        raw_process.wait()
    raw_times = times["raw fork+exec echo"]
    base = statistics.median(raw_times)
    print(f"\nexec of /bin/true, {calls} interleaved rounds:")
    print(f"  {'':20} {'median':>10}  {'ratio of medians':>16}  {'paired ratio':>12}")
    worst = 0.0
    for label, values in times.items():
        ratio = statistics.median(values) / base
        paired = paired_ratio(values, raw_times)
        if label != "raw fork+exec echo":
            worst = max(worst, paired)
        print(f"  {label:20} {median_ms(values)}  {ratio:15.2f}x  {paired:11.2f}x")
    verdict = "meets" if worst <= EXEC_TARGET else "MISSES"
    print(f"  firec {verdict} the target of {EXEC_TARGET}x: worst paired {worst:.2f}x")
    walls = asyncio.run(concurrent(agent_sock, 100, 10))
    print(
        f"\n100 concurrent AsyncClient.exec: median wall {median_ms(walls)} "
        f"({statistics.median(walls) * 10:.3f} ms per exec; "
        f"100 raw execs one after another: {base * 1e5:.3f} ms)"
    )


def bench_copy(agent_sock: Path, raw: Path, workdir: Path, rounds: int) -> None:
    source, target = workdir / "source.bin", workdir / "target.bin"
    block = os.urandom(CHUNK)
    with open(source, "wb") as f:
        for _ in range(GIB // CHUNK):
            f.write(block)
    copies: dict[str, list[float]] = {
        "raw upload": [],
        "files.upload": [],
        "raw download": [],
        "files.download": [],
    }
    with Client.unix(agent_sock) as client:

        def timed(call: Callable[[], object]) -> float:
            t = time.perf_counter()
            call()
            return time.perf_counter() - t

        runs: dict[str, Callable[[], float]] = {
            "raw upload": lambda: raw_copy(raw, workdir, "sink", target, source),
            "files.upload": lambda: timed(lambda: client.files.upload(source, target)),
            "raw download": lambda: raw_copy(raw, workdir, "source", source, target),
            "files.download": lambda: timed(lambda: client.files.download(source, target)),
        }
        order = list(runs)
        for _ in range(rounds):
            random.shuffle(order)  # no path always follows the same one
            for label in order:
                copies[label].append(runs[label]())
                target.unlink()
    print(f"\n1 GiB, {rounds} interleaved rounds in shuffled order:")
    worst_share = 1.0
    for label, values in copies.items():
        speed = GIB / statistics.median(values) / 1e6
        print(f"  {label:15} median {statistics.median(values):6.3f} s  {speed:7.0f} MB/s")
    for way in ("upload", "download"):
        # throughput share = raw time / firec time, paired round by round
        share = 1 / paired_ratio(copies[f"files.{way}"], copies[f"raw {way}"])
        worst_share = min(worst_share, share)
        print(f"  files.{way}: {share * 100:5.1f}% of the raw copy's throughput (paired)")
    verdict = "meets" if worst_share >= COPY_TARGET else "MISSES"
    print(f"  firec {verdict} the target of {COPY_TARGET * 100:.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, help="pin the benchmark and its servers to one CPU")
    parser.add_argument("--only", choices=("start", "exec", "copy"), help="run one part")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    workdir = scratch_dir("firec-agent-bench-")
    try:
        agent = agent_binary()
        raw = build_raw(workdir)
        print(f"firec-agent: {agent} ({agent.stat().st_size} bytes)")
        if args.only in (None, "start"):
            bench_start(agent, raw, workdir)
        if args.only == "start":
            return
        agent_sock = workdir / "agent.sock"
        agent_process = spawn([str(agent), "--service", "--listen", f"unix:{agent_sock}"])
        try:
            connect_when_listening(agent_sock, time.monotonic() + 5).close()
            if args.only in (None, "exec"):
                bench_exec(agent_sock, raw, workdir, args.calls)
            if args.only in (None, "copy"):
                bench_copy(agent_sock, raw, workdir, args.rounds)
        finally:
            agent_process.terminate()
            agent_process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
