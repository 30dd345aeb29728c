"""Parsing and forwarding Firecracker log lines (captured from real 1.14.2 and 1.0.0)."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from firec.testing.guest import BOOT_LINE, build_test_guest, echo_line, guest_args
from firec.vm.logs import (
    LogForwarder,
    LogRecord,
    VmFilter,
    parse_log_line,
    python_level,
    to_logging,
)
from firec.vm.streams import LineReader
from tests.support import require_firecracker

# Real lines, verbatim, from /opt/fc/firecracker-v1.14.2 and -v1.0.0 on this host.
V1_14_PLAIN = (
    "2026-11-27T13:39:19.816723725 [vm-7:main] Firecracker exiting successfully. exit_code=0"
)
V1_14_LEVEL = (
    "2026-11-27T13:38:59.979866528 [anonymous-instance:fc_vcpu 0:WARN] "
    "KVM_KVMCLOCK_CTRL call failed Invalid argument (os error 22)"
)
V1_14_ORIGIN = (
    "2026-11-27T13:39:20.668423128 [vm-7:fc_vcpu 1:WARN:src/vmm/src/vstate/vcpu.rs:304] "
    "Received a VcpuEvent::Resume message with immediate_exit enabled. "
    "immediate_exit was disabled before proceeding"
)
V1_14_ORIGIN_NO_LEVEL = (
    "2026-11-27T08:39:41.912903701 [anonymous-instance:main:src/firecracker/src/main.rs:320] "
    "Running Firecracker v1.14.2"
)
V1_14_ERROR_ORIGIN = (
    "2026-11-27T13:39:01.711009756 [anonymous-instance:fc_api:ERROR:"
    'src/firecracker/src/api_server/mod.rs:140] InvalidPathMethod("bogus", Put)'
)
V1_14_ESCAPED_NEWLINES = (
    "2026-11-27T13:42:58.201092591 [anonymous-instance:main] Arguments parsing error: "
    "Found argument 'bogus' which wasn't expected, or isn't valid in this context. "
    "\\n\\nFor more information try --help."
)
V1_0_PLAIN = (
    "2026-11-27T13:39:02.297616791 [anonymous-instance:fc_api] The API server received a Put "
    'request on "/metrics" with body "{\\"metrics_path\\":\\"/tmp/fcout/1.0.0-plain/metrics\\"}".'
)
V1_0_LEVEL = (
    "2026-11-27T13:39:03.491446722 [anonymous-instance:fc_api:ERROR] "
    "Invalid request method and/or path: PUT bogus."
)
V1_0_ORIGIN = (
    "2026-11-27T13:39:22.365395338 [vm-7:main:WARN:src/devices/src/legacy/serial.rs:249] "
    "Failed to register serial input fd: event_manager: failed to manage epoll file descriptor"
)
V1_0_FIRST_LOG_FILE_LINE = "Running Firecracker v1.0.0-44-gc73a27cb-dirty"
# 1.0.0's argument error on stderr: one record whose message continues on two plain lines.
V1_0_MULTILINE = [
    "2026-11-27T13:38:52.430580083 [anonymous-instance:main:ERROR:src/firecracker/src/main.rs:213]"
    " Arguments parsing error: Found argument 'bogus' which wasn't expected, or isn't valid in"
    " this context. ",
    "",
    "For more information try --help.",
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            V1_14_PLAIN,
            LogRecord(
                at("2026-11-27T13:39:19.816723"),
                "vm-7",
                "main",
                None,
                None,
                "Firecracker exiting successfully. exit_code=0",
                816723725,
            ),
        ),
        (
            V1_14_LEVEL,
            LogRecord(
                at("2026-11-27T13:38:59.979866"),
                "anonymous-instance",
                "fc_vcpu 0",
                "WARN",
                None,
                "KVM_KVMCLOCK_CTRL call failed Invalid argument (os error 22)",
                979866528,
            ),
        ),
        (
            V1_14_ORIGIN,
            LogRecord(
                at("2026-11-27T13:39:20.668423"),
                "vm-7",
                "fc_vcpu 1",
                "WARN",
                "src/vmm/src/vstate/vcpu.rs:304",
                "Received a VcpuEvent::Resume message with immediate_exit enabled. "
                "immediate_exit was disabled before proceeding",
                668423128,
            ),
        ),
        (
            V1_14_ORIGIN_NO_LEVEL,
            LogRecord(
                at("2026-11-27T08:39:41.912903"),
                "anonymous-instance",
                "main",
                None,
                "src/firecracker/src/main.rs:320",
                "Running Firecracker v1.14.2",
                912903701,
            ),
        ),
        (
            V1_14_ERROR_ORIGIN,
            LogRecord(
                at("2026-11-27T13:39:01.711009"),
                "anonymous-instance",
                "fc_api",
                "ERROR",
                "src/firecracker/src/api_server/mod.rs:140",
                'InvalidPathMethod("bogus", Put)',
                711009756,
            ),
        ),
        (
            V1_0_PLAIN,
            LogRecord(
                at("2026-11-27T13:39:02.297616"),
                "anonymous-instance",
                "fc_api",
                None,
                None,
                'The API server received a Put request on "/metrics" with body '
                '"{\\"metrics_path\\":\\"/tmp/fcout/1.0.0-plain/metrics\\"}".',
                297616791,
            ),
        ),
        (
            V1_0_LEVEL,
            LogRecord(
                at("2026-11-27T13:39:03.491446"),
                "anonymous-instance",
                "fc_api",
                "ERROR",
                None,
                "Invalid request method and/or path: PUT bogus.",
                491446722,
            ),
        ),
        (
            V1_0_ORIGIN,
            LogRecord(
                at("2026-11-27T13:39:22.365395"),
                "vm-7",
                "main",
                "WARN",
                "src/devices/src/legacy/serial.rs:249",
                "Failed to register serial input fd: event_manager: "
                "failed to manage epoll file descriptor",
                365395338,
            ),
        ),
    ],
)
def test_parse_real_lines(line: str, expected: LogRecord) -> None:
    assert parse_log_line(line, tz=UTC) == expected


def test_escaped_newlines_of_1_14_stay_in_the_message() -> None:
    record = parse_log_line(V1_14_ESCAPED_NEWLINES)
    assert record is not None
    assert record.message.endswith("context. \\n\\nFor more information try --help.")


@pytest.mark.parametrize(
    "line",
    [
        BOOT_LINE,
        echo_line("hi"),
        V1_0_FIRST_LOG_FILE_LINE,
        "",
        "For more information try --help.",
        "2026-11-27T13:39:19.816723725 no bracket",
        "2026-11-27T13:39:19.816723725 [only-one-field] message",
        "2026-13-45T13:39:19.816723725 [vm:main] month 13",
        "x2026-11-27T13:39:19.816723725 [vm:main] prefixed",
    ],
)
def test_lines_that_are_not_log_records(line: str) -> None:
    assert parse_log_line(line) is None


def test_message_may_hold_brackets_and_colons() -> None:
    record = parse_log_line("2026-11-27T13:39:19.5 [vm:fc_api:INFO] a [b:c] d: e]", tz=UTC)
    assert record is not None
    assert (record.level, record.origin, record.message) == ("INFO", None, "a [b:c] d: e]")
    assert record.nanosecond == 500_000_000


def test_time_is_read_in_firecrackers_zone_and_given_in_utc() -> None:
    five_west = timezone(timedelta(hours=-5))
    record = parse_log_line(V1_14_ORIGIN_NO_LEVEL, tz=five_west)
    assert record is not None
    assert record.time == at("2026-11-27T13:39:41.912903")
    assert record.time.tzinfo is UTC


def test_default_zone_is_this_process_local_zone() -> None:
    record = parse_log_line(V1_14_PLAIN)
    assert record is not None
    local = datetime.fromisoformat("2026-11-27T13:39:19.816723").astimezone()
    assert record.time == local


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("ERROR", logging.ERROR),
        ("Error", logging.ERROR),
        ("WARN", logging.WARNING),
        ("Warning", logging.WARNING),
        ("INFO", logging.INFO),
        ("DEBUG", logging.DEBUG),
        ("Trace", logging.DEBUG),
        (None, logging.INFO),
        ("Bogus", logging.INFO),
    ],
)
def test_python_level(level: str | None, expected: int) -> None:
    assert python_level(level) == expected


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger("firec.vmm")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_to_logging_emits_a_record_with_firecrackers_metadata(collect: Collect) -> None:
    record = parse_log_line(V1_14_ORIGIN, tz=UTC)
    assert record is not None
    to_logging(record)
    [emitted] = collect.records
    assert emitted.name == "firec.vmm"
    assert emitted.__dict__["vm_id"] == "vm-7"
    assert emitted.levelno == logging.WARNING
    assert emitted.getMessage() == record.message
    assert emitted.created == pytest.approx(at("2026-11-27T13:39:20.668423128"[:26]).timestamp())
    assert emitted.msecs == 668.0
    assert emitted.threadName == "fc_vcpu 1"
    assert (emitted.pathname, emitted.lineno) == ("src/vmm/src/vstate/vcpu.rs", 304)
    assert emitted.__dict__["vmm_thread"] == "fc_vcpu 1"
    assert emitted.__dict__["vmm_origin"] == "src/vmm/src/vstate/vcpu.rs:304"
    assert emitted.__dict__["vmm_instance"] == "vm-7"
    formatted = logging.Formatter("%(asctime)s|%(vmm_thread)s|%(message)s").format(emitted)
    assert "|fc_vcpu 1|Received a VcpuEvent" in formatted


def test_to_logging_leaves_percent_signs_alone_and_honours_levels(collect: Collect) -> None:
    record = LogRecord(at("2026-01-01T00:00:00"), "vm", "main", "DEBUG", None, "100% %s %d")
    target = logging.getLogger("firec.vmm.custom")
    target.setLevel(logging.INFO)
    try:
        to_logging(record, target)
        assert collect.records == []  # DEBUG is below the logger's level
        to_logging(LogRecord(record.time, "vm", "main", None, None, "100% %s %d"), target)
    finally:
        target.setLevel(logging.NOTSET)
    [emitted] = collect.records
    assert (emitted.name, emitted.levelno) == ("firec.vmm.custom", logging.INFO)
    assert emitted.getMessage() == "100% %s %d"


def test_every_vm_logs_on_one_logger_and_is_told_apart_by_vm_id(collect: Collect) -> None:
    """No logger per VM (a logger is never freed): one logger, ``vm_id`` on each record."""
    before = set(logging.Logger.manager.loggerDict)
    only_b = Collect()
    only_b.addFilter(VmFilter("vm-b"))
    logging.getLogger("firec.vmm").addHandler(only_b)
    try:
        for vm_id in (f"vm-{i}" for i in range(50)):
            forwarder = LogForwarder(vm_id=vm_id)
            forwarder("banner before any record")
            forwarder(V1_14_ORIGIN.replace("[vm-7:", f"[{vm_id}:"))
        LogForwarder(vm_id="vm-b")(V1_14_ORIGIN)  # the id given wins over the line's
    finally:
        logging.getLogger("firec.vmm").removeHandler(only_b)
    kept = only_b.records
    assert set(logging.Logger.manager.loggerDict) == before
    assert {r.name for r in collect.records} == {"firec.vmm"}
    assert [getattr(r, "vm_id", None) for r in collect.records[:4]] == ["vm-0"] * 2 + ["vm-1"] * 2
    assert [(r.vm_id, r.vmm_instance) for r in kept] == [("vm-b", "vm-7")]  # type: ignore[attr-defined]


def test_forwarder_joins_continuation_lines_to_their_record(collect: Collect) -> None:
    forwarder = LogForwarder()
    for line in [V1_0_FIRST_LOG_FILE_LINE, *V1_0_MULTILINE, V1_0_LEVEL]:
        forwarder(line)
    messages = [(r.name, r.levelname, r.getMessage()) for r in collect.records]
    assert messages == [
        ("firec.vmm", "INFO", V1_0_FIRST_LOG_FILE_LINE),
        ("firec.vmm", "ERROR", V1_0_MULTILINE[0].split("] ", 1)[1]),
        ("firec.vmm", "ERROR", ""),
        ("firec.vmm", "ERROR", "For more information try --help."),
        ("firec.vmm", "ERROR", "Invalid request method and/or path: PUT bogus."),
    ]
    ids = [getattr(r, "vm_id", None) for r in collect.records]
    assert ids == [None, *["anonymous-instance"] * 4]
    assert forwarder.recent() == [V1_0_FIRST_LOG_FILE_LINE, *V1_0_MULTILINE, V1_0_LEVEL]
    continued = forwarder.recent_records()[1]
    assert (continued.thread, continued.origin) == ("main", "src/firecracker/src/main.rs:213")


def test_forwarder_sends_other_lines_elsewhere(collect: Collect) -> None:
    console: list[str] = []
    records: list[LogRecord] = []
    forwarder = LogForwarder(other=console.append, on_record=records.append, keep=3)
    lines = [V1_14_PLAIN, BOOT_LINE, echo_line("hi"), V1_14_LEVEL]
    for line in lines:
        forwarder(line)
    assert console == [BOOT_LINE, echo_line("hi")]
    assert [r.message for r in records] == [
        "Firecracker exiting successfully. exit_code=0",
        "KVM_KVMCLOCK_CTRL call failed Invalid argument (os error 22)",
    ]
    assert len(collect.records) == 2
    assert forwarder.recent() == lines[-3:]
    assert forwarder.recent(2) == lines[-2:]
    assert forwarder.recent(0) == []
    assert [r.thread for r in forwarder.recent_records()] == ["fc_vcpu 0"]


# Real 1.14.2 stdout: a log line written while the guest was mid-way through a console line.
CUT_CONSOLE = [
    "firec-guest: bo2026-11-27T13:45:37.697696952 [logs-test:fc_api] The request was executed"
    " successfully. Status code: 204 No Content.",
    "oted",
    "firec-guest: echo hi",
]


def test_forwarder_mends_console_lines_cut_by_a_log_line(collect: Collect) -> None:
    console: list[str] = []
    forwarder = LogForwarder(other=console.append)
    for line in CUT_CONSOLE:
        forwarder(line)
    assert console == [BOOT_LINE, echo_line("hi")]
    [emitted] = collect.records
    assert (
        emitted.getMessage()
        == "The request was executed successfully. Status code: 204 No Content."
    )
    assert forwarder.recent() == [CUT_CONSOLE[0][15:], BOOT_LINE, echo_line("hi")]


def test_forwarder_flush_delivers_a_console_line_left_unfinished(collect: Collect) -> None:
    console: list[str] = []
    forwarder = LogForwarder(other=console.append)
    forwarder("kernel pan" + V1_14_PLAIN)
    forwarder("ic" + V1_14_LEVEL)  # cut twice
    assert console == []
    forwarder.flush()
    forwarder.flush()
    assert console == ["kernel panic"]
    assert [r.getMessage() for r in collect.records] == [
        "Firecracker exiting successfully. exit_code=0",
        "KVM_KVMCLOCK_CTRL call failed Invalid argument (os error 22)",
    ]


# --- end to end with a real Firecracker ----------------------------------------------------


def start_firecracker(directory: Path, *args: str) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    socket_path = directory / "api.sock"
    stderr = (directory / "stderr").open("wb")
    proc = subprocess.Popen(
        [require_firecracker(), "--api-sock", str(socket_path), "--id", "logs-test", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"Firecracker did not start: {(directory / 'stderr').read_text()}")
        time.sleep(0.005)
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://localhost"
    )
    return proc, client


def boot_and_exit(client: httpx.Client) -> None:
    kernel = build_test_guest()
    boot_args = f"console=ttyS0 {guest_args(exit=True, echo=['hi'])}"
    for path, body in [
        ("/boot-source", {"kernel_image_path": str(kernel), "boot_args": boot_args}),
        ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]:
        response = client.put(path, json=body)
        assert response.status_code == 204, response.text


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_real_firecracker_log_fifo_is_parsed(short_tmp: Path, collect: Collect) -> None:
    fifo = short_tmp / "log.fifo"
    os.mkfifo(fifo)
    records: list[LogRecord] = []
    forwarder = LogForwarder(on_record=records.append)
    gc.collect()
    fds = sorted(os.listdir("/proc/self/fd"))
    with LineReader(fifo, forwarder):
        proc, client = start_firecracker(
            short_tmp,
            *("--log-path", str(fifo), "--level", "Debug", "--show-level", "--show-log-origin"),
        )
        try:
            with client:
                boot_and_exit(client)
            assert proc.wait(10) == 0
        finally:
            stop_process(proc)
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == fds
    assert records, "no log record arrived"
    assert {r.instance_id for r in records} == {"logs-test"}
    assert all(r.level in {"ERROR", "WARN", "INFO", "DEBUG"} for r in records)
    assert all(r.origin is not None and r.origin.split(":")[0].endswith(".rs") for r in records)
    received = [r for r in records if 'request on "/machine-config"' in r.message]
    assert [r.thread for r in received] == ["fc_api"]
    assert any(r.level == "DEBUG" for r in records)
    emitted = {(r.name, r.getMessage()) for r in collect.records}
    assert ("firec.vmm", received[0].message) in emitted
    parsed = [r for r in collect.records if hasattr(r, "vmm_instance")]  # not 1.0's banner
    assert {getattr(r, "vm_id", None) for r in parsed} == {"logs-test"}
    # Every line of a dedicated log file is a record, or (1.0) its version banner.
    others = [line for line in forwarder.recent() if parse_log_line(line) is None]
    assert all(line.startswith("Running Firecracker v") for line in others)


def test_real_firecracker_stdout_separates_console_from_log(short_tmp: Path) -> None:
    console: list[str] = []
    records: list[LogRecord] = []
    forwarder = LogForwarder(other=console.append, on_record=records.append)
    proc, client = start_firecracker(short_tmp)
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout.fileno(), forwarder)
        reader.start()
        with client:
            boot_and_exit(client)
        assert proc.wait(10) == 0
        assert reader.wait(10)
        reader.stop()
        forwarder.flush()
    finally:
        stop_process(proc)
    assert console == [BOOT_LINE, echo_line("hi")]
    # 1.14 logs to stdout by default, 1.0 to stderr: whatever came is well-formed.
    assert all(r.instance_id == "logs-test" for r in records)
