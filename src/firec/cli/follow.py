"""Watching a microVM: its serial console, Firecracker's log, a live metrics view."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.live import Live
from rich.table import Table

from firec.api import models
from firec.api._sync.client import Client
from firec.cli.output import ExitCode, fail, out, print_json, table
from firec.cli.vms import VmState, console_path, live_state, resolve
from firec.errors import FirecError, ValidationError
from firec.host.registry import VmRecord
from firec.vm.metrics import MetricsSnapshot, parse_metrics_line
from firec.vm.streams import tail_lines

__all__ = ["console", "follow_file", "logs", "metrics", "read_tail"]

POLL_INTERVAL = 0.1

VmArgument = Annotated[str, typer.Argument(help="The microVM id (or a unique start of it).")]
LinesOption = Annotated[
    int | None,
    typer.Option("--tail", "-n", help="Start with only the last N lines.", min=0),
]


def read_tail(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last ``lines`` lines of ``path`` (all of it with ``None``), and where they end."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if lines is None:
            return f.read(size), size
        start = max(0, size - (64 << 10) * max(1, lines))
        f.seek(start)
        data = f.read(size - start)
    pieces = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        pieces = pieces[:-1]
    kept = pieces[-lines:] if lines else []
    text = b"\n".join(kept) + (b"\n" if kept and ends_with_newline else b"")
    return text, size


def follow_file(path: Path, offset: int, running: Callable[[], bool], sink: BinaryIO) -> None:
    """Copy what is appended to ``path`` after ``offset`` to ``sink`` until ``running()`` is false.

    What was written before the end is copied too (the file is read once more
    after the process is gone).
    """
    with path.open("rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                sink.write(chunk)
                sink.flush()
                continue
            if not running():
                rest = f.read()
                if rest:
                    sink.write(rest)
                    sink.flush()
                return
            time.sleep(POLL_INTERVAL)


def _regular_file(path: Path, what: str, record: VmRecord) -> Path:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        fail(
            ExitCode.WRONG_STATE,
            f"the {what} of microVM {record.vm_id} is gone ({path}): was it removed?",
        )
    if not stat.S_ISREG(mode):
        fail(ExitCode.WRONG_STATE, f"the {what} of microVM {record.vm_id} ({path}) is not a file")
    return path


def _show(path: Path, record: VmRecord, *, lines: int | None, follow: bool) -> None:
    data, offset = read_tail(path, lines)
    sink = sys.stdout.buffer
    sink.write(data)
    sink.flush()
    if follow:
        with contextlib.suppress(KeyboardInterrupt):  # leaving does not stop the VM
            follow_file(path, offset, record.vmm_alive, sink)


def console(
    ctx: typer.Context,
    vm: VmArgument,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Keep showing new output.")
    ] = True,
    lines: LinesOption = None,
) -> None:
    """Show a detached microVM's serial console, following it until the VM exits.

    Output only (firec attach VM sends input too). Ctrl-C leaves the
    console; the VM runs on.
    """
    record = resolve(ctx.obj, vm)
    path = _regular_file(console_path(record), "console", record)
    _show(path, record, lines=lines, follow=follow)


def logs(
    ctx: typer.Context,
    vm: VmArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing new lines until the VM exits.")
    ] = False,
    lines: LinesOption = None,
) -> None:
    """Show Firecracker's log of a microVM."""
    record = resolve(ctx.obj, vm)
    if record.log is None:
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} has no log yet")
    path = _regular_file(Path(record.log), "log", record)
    _show(path, record, lines=lines, follow=follow)


# -- metrics ------------------------------------------------------------------------------------


def flush_and_read(record: VmRecord, timeout: float = 3.0) -> MetricsSnapshot:
    """Ask the VMM to write its metrics now (FlushMetrics) and read the line it wrote."""
    if record.metrics is None or record.socket is None:
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} has no metrics file")
    path = Path(record.metrics)
    before = path.stat().st_size if path.exists() else 0
    with Client(record.socket, timeout=timeout) as client:
        client.create_action(models.ActionType.FLUSH_METRICS)
    deadline = time.monotonic() + timeout
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size > before:
            last = tail_lines(path, 1)
            if last:
                try:
                    return parse_metrics_line(last[0])
                except ValidationError:
                    pass  # the line is still being written
        if time.monotonic() > deadline:
            fail(ExitCode.TIMEOUT, f"microVM {record.vm_id} wrote no metrics within {timeout:g}s")
        time.sleep(0.01)


def metrics_table(
    snapshot: MetricsSnapshot, previous: MetricsSnapshot | None, *, everything: bool
) -> Table:
    """The counters of ``snapshot`` (non-zero ones unless ``everything``), with rates.

    Firecracker writes most counters as the count since its previous write
    (they restart from zero at each flush); the rate is that count over the
    time since ``previous``. Times (``*_us``) get no rate.
    """
    seconds = 0.0
    if previous is not None:
        seconds = (snapshot.utc_timestamp_ms - previous.utc_timestamp_ms) / 1000
    rows = []
    for group, counters in sorted(snapshot.groups.items()):
        for name, value in sorted(counters.items()):
            if not value and not everything:
                continue
            timing = name.endswith("_us") or group == "latencies_us"
            rate = f"{value / seconds:.1f}" if seconds > 0 and not timing else ""
            rows.append([group, name, value, rate])
    title = f"metrics at {snapshot.time.isoformat(timespec='seconds')} (since the previous write)"
    return table(["GROUP", "COUNTER", "VALUE", "PER SECOND"], rows, title=title)


def metrics(
    ctx: typer.Context,
    vm: VmArgument,
    interval: Annotated[float, typer.Option(help="Seconds between updates.", min=0.1)] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="One snapshot, then exit.")] = False,
    everything: Annotated[
        bool, typer.Option("--all", "-a", help="Show counters that are zero too.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One snapshot as JSON.")] = False,
) -> None:
    """A live view of a microVM's Firecracker metrics (Ctrl-C leaves it)."""
    record = resolve(ctx.obj, vm)
    state = live_state(record)
    if state not in (VmState.RUNNING, VmState.PAUSED, VmState.NOT_STARTED):
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is {state.value}")
    snapshot = flush_and_read(record)
    if as_json:
        print_json(snapshot.raw)
        return
    if once:
        out.print(metrics_table(snapshot, None, everything=everything))
        return
    previous: MetricsSnapshot | None = None
    try:
        with Live(metrics_table(snapshot, None, everything=everything), console=out) as live:
            while record.vmm_alive():
                time.sleep(interval)
                previous, snapshot = snapshot, flush_and_read(record)
                live.update(metrics_table(snapshot, previous, everything=everything))
    except KeyboardInterrupt:
        return
    except FirecError:
        if record.vmm_alive():
            raise
