"""Firecracker's log lines: parse them, forward them to :mod:`logging`.

Firecracker writes one line per message (to ``--log-path``, ``PUT /logger``'s
``log_path``, or, without either, to its stdout on 1.14 and its stderr on
1.0)::

    2026-11-27T13:39:19.816723725 [vm-7:main] Firecracker exiting successfully. exit_code=0

The bracket holds the instance id (``--id``, ``anonymous-instance`` by
default) and the thread (``main``, ``fc_api``, ``fc_vcpu 0``...), then with
``--show-level`` / ``show_level`` the level (``ERROR``, ``WARN``, ``INFO``,
``DEBUG``, ``TRACE``), then with ``--show-log-origin`` / ``show_log_origin``
the source position::

    2026-11-27T13:39:20.668423128 [vm-7:fc_vcpu 1:WARN:src/vmm/src/vstate/vcpu.rs:304] Received ...
    2026-11-27T08:39:41.912903701 [vm-7:main:src/firecracker/src/main.rs:320] Running ...

The timestamp is the *local* time of the Firecracker process, with no zone
(it follows the process's ``TZ``; a jailed Firecracker without
``/etc/localtime`` in its chroot writes UTC). :func:`parse_log_line` reads it
as this process's local time unless told the zone with ``tz``, and gives it
in UTC.

Not every line in those streams is a log record: the serial console shares
Firecracker's stdout, 1.0 writes ``Running Firecracker v1.0.0...`` bare as the
first line of its log file, and a message with newlines (1.0 writes argument
errors that way) continues on plain lines. :func:`parse_log_line` returns
``None`` for those; :class:`LogForwarder` treats them as continuations of the
previous record, or hands them elsewhere (``other``).

Example::

    from firec.vm.logs import LogForwarder
    from firec.vm.streams import LineReader

    forwarder = LogForwarder()  # records go to the logger "firec.vmm"
    with LineReader("/run/fc/log.fifo", forwarder):
        ...
    print("\\n".join(forwarder.recent(10)))

Every record goes to the one logger ``firec.vmm``, whatever the VM: a logger
is never freed, so one per VM would grow without end in a long-running
program. Each record says which VM wrote it in its attribute ``vm_id``; keep
one VM's lines with :class:`VmFilter` (or any filter on ``record.vm_id``)::

    import logging
    from firec.vm.logs import VmFilter

    handler = logging.FileHandler("/var/log/vm-7.log")
    handler.addFilter(VmFilter("vm-7"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(vm_id)s %(vmm_thread)s %(message)s"))
    logging.getLogger("firec.vmm").addHandler(handler)
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from firec.vm.guest_agent import hide_token

__all__ = [
    "VMM_LOGGER",
    "LogForwarder",
    "LogRecord",
    "VmFilter",
    "parse_log_line",
    "python_level",
    "to_logging",
]

#: The name of the logger every Firecracker log record goes to (with ``vm_id`` set).
VMM_LOGGER = "firec.vmm"

logging.getLogger(VMM_LOGGER).addHandler(logging.NullHandler())

_LINE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<clock>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r" \[(?P<id>[^:\]]+):(?P<thread>[^:\]]+)"
    r"(?::(?P<level>ERROR|WARN|WARNING|INFO|DEBUG|TRACE))?"
    r"(?::(?P<origin>[^\]]+:\d+))?\]"
    r"(?: (?P<message>.*))?\Z",
    re.IGNORECASE | re.DOTALL,
)

_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


@dataclass(frozen=True)
class LogRecord:
    """One Firecracker log line, parsed.

    Attributes:
        time: when it was written, in UTC (microsecond precision).
        instance_id: the ``--id`` of the Firecracker that wrote it.
        thread: the Firecracker thread: ``main``, ``fc_api``, ``fc_vcpu 0``...
        level: the level as written (``ERROR``, ``WARN``, ``INFO``, ``DEBUG``,
            ``TRACE``), or ``None`` without ``--show-level``.
        origin: ``"src/file.rs:123"``, or ``None`` without ``--show-log-origin``.
        message: the text after the bracket.
        nanosecond: the fraction of the second as written, in nanoseconds
            (0 to 999 999 999; :attr:`time` keeps it to the microsecond).
    """

    time: datetime
    instance_id: str
    thread: str
    level: str | None
    origin: str | None
    message: str
    nanosecond: int = 0

    @property
    def logging_level(self) -> int:
        """The :mod:`logging` level of this record (see :func:`python_level`)."""
        return python_level(self.level)


def python_level(level: str | None) -> int:
    """Map a Firecracker level name to a :mod:`logging` level.

    ``Error`` -> ``ERROR``, ``Warn``/``Warning`` -> ``WARNING``, ``Info`` ->
    ``INFO``, ``Debug``/``Trace`` -> ``DEBUG``, in any case; ``None`` or an
    unknown name -> ``INFO``.

    Example::

        >>> python_level("WARN") == logging.WARNING
        True
    """
    if level is None:
        return logging.INFO
    return _LEVELS.get(level.lower(), logging.INFO)


def parse_log_line(line: str, *, tz: tzinfo | None = None) -> LogRecord | None:
    """Parse one Firecracker log line; ``None`` if the line is not a log record.

    Args:
        line: one line, without its newline.
        tz: the zone Firecracker's clock was in when it wrote the line; by
            default this process's local zone (right when Firecracker runs
            here with the same ``TZ``). Pass ``datetime.UTC`` for a
            jailed Firecracker whose chroot has no ``/etc/localtime``.

    Example::

        >>> from datetime import UTC
        >>> r = parse_log_line(
        ...     "2026-11-27T13:39:20.668423128 [vm-7:fc_vcpu 1:WARN:src/vmm/src/vstate/vcpu.rs:304]"
        ...     " Received a VcpuEvent::Resume message",
        ...     tz=UTC,
        ... )
        >>> r.instance_id, r.thread, r.level, r.origin
        ('vm-7', 'fc_vcpu 1', 'WARN', 'src/vmm/src/vstate/vcpu.rs:304')
        >>> r.time.isoformat(), r.nanosecond
        ('2026-11-27T13:39:20.668423+00:00', 668423128)
        >>> parse_log_line("firec-guest: booted") is None
        True
    """
    match = _LINE.match(line)
    return None if match is None else _record(match, tz)


def _record(match: re.Match[str], tz: tzinfo | None) -> LogRecord | None:
    frac = (match["frac"] or "").ljust(9, "0")
    nanosecond = int(frac)
    try:
        naive = datetime.fromisoformat(f"{match['date']}T{match['clock']}")
    except ValueError:  # e.g. month 13: looks like a log line, is not one
        return None
    naive = naive.replace(microsecond=nanosecond // 1000)
    local = naive.astimezone() if tz is None else naive.replace(tzinfo=tz)
    return LogRecord(
        time=local.astimezone(UTC),
        instance_id=match["id"],
        thread=match["thread"],
        level=match["level"],
        origin=match["origin"],
        message=match["message"] or "",
        nanosecond=nanosecond,
    )


def to_logging(
    record: LogRecord, logger: logging.Logger | None = None, *, vm_id: str | None = None
) -> None:
    """Emit ``record`` as a :mod:`logging` record.

    Args:
        record: a parsed Firecracker log line.
        logger: where to emit; by default the logger ``firec.vmm``
            (:data:`VMM_LOGGER`), shared by every VM.
        vm_id: the VM the record is about, set as the record's ``vm_id``;
            by default the instance id Firecracker wrote in the line.

    The emitted record has the mapped level (:func:`python_level`),
    ``created`` set to Firecracker's timestamp, ``threadName`` set to the
    Firecracker thread, ``pathname``/``lineno`` from the origin when known,
    and the extra attributes ``vm_id``, ``vmm_instance``, ``vmm_thread``,
    ``vmm_level`` and ``vmm_origin`` (usable in a format string as
    ``%(vm_id)s``, and in a filter: see :class:`VmFilter`).

    Example::

        import logging
        logging.basicConfig(format="%(asctime)s %(vm_id)s %(vmm_thread)s %(levelname)s %(message)s")
        to_logging(parse_log_line(line))
    """
    level = record.logging_level
    target = logger if logger is not None else logging.getLogger(VMM_LOGGER)
    if not target.isEnabledFor(level):
        return
    pathname, lineno = "", 0
    if record.origin is not None:
        pathname, _, number = record.origin.rpartition(":")
        lineno = int(number)
    emitted = target.makeRecord(
        target.name,
        level,
        pathname,
        lineno,
        record.message,
        (),
        None,
        extra={
            "vm_id": vm_id if vm_id is not None else record.instance_id,
            "vmm_instance": record.instance_id,
            "vmm_thread": record.thread,
            "vmm_level": record.level,
            "vmm_origin": record.origin,
        },
    )
    whole = int(record.time.replace(microsecond=0).timestamp())
    created = whole + record.nanosecond / 1e9
    emitted.relativeCreated += (created - emitted.created) * 1000
    emitted.created = created
    emitted.msecs = float(record.nanosecond // 1_000_000)
    emitted.threadName = record.thread
    target.handle(emitted)


class VmFilter(logging.Filter):
    """Let through only the records of the VMs named (their ``vm_id`` attribute).

    Records without a ``vm_id`` (from other loggers) are dropped. Example::

        handler.addFilter(VmFilter("vm-7", "vm-8"))
    """

    def __init__(self, *vm_ids: str) -> None:
        super().__init__()
        self.vm_ids = frozenset(vm_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is about one of the VMs."""
        return getattr(record, "vm_id", None) in self.vm_ids


class LogForwarder:
    """Parse Firecracker's lines and forward them; keep the last few for errors.

    An instance is a line callback for :class:`~firec.vm.streams.LineReader` and
    :class:`~firec.vm.streams.AsyncLineReader`. Each log record goes to
    :func:`to_logging` (to ``logger``, by default the one logger ``firec.vmm``
    shared by every VM) and to ``on_record``. Each emitted
    :class:`logging.LogRecord` carries ``vm_id`` (``vm_id``, or the instance
    id in the line): to see one VM's lines, filter on it, e.g. with
    ``handler.addFilter(VmFilter("vm-7"))`` (:class:`VmFilter`). A line that
    is not a log record goes to ``other`` when given (e.g. the serial
    console, on Firecracker's stdout); without ``other`` it is taken as a
    continuation of a multi-line message and forwarded as a record with the
    metadata of the record it continues (a line before any record gets no
    instance id or thread: it is logged on the logger ``firec.vmm`` at INFO,
    with ``vm_id`` set when the forwarder was given one).

    On a stream shared with the serial console, Firecracker's log lines are
    written whole, but the guest's console output arrives byte by byte, so
    a log line can land in the middle of a console line
    (``firec-guest: bo2026-11-27T13:45:37.697696952 [vm:fc_api] ...`` then
    ``oted``). With ``other`` given, the forwarder takes the record out and
    hands ``other`` the console line mended (``firec-guest: booted``) once
    its end arrives; :meth:`flush` delivers a console line still waiting for
    its end when the stream is over.

    Args:
        logger: the logger for every record, instead of ``firec.vmm``.
        vm_id: the VM whose lines these are, set as each record's ``vm_id``
            (by default the instance id Firecracker writes in each line).
        keep: how many lines :meth:`recent` remembers.
        tz: Firecracker's zone (see :func:`parse_log_line`).
        on_record: also called with each record (after logging).
        other: called with each line that is not a log record.

    Thread-safe: the reader thread feeds it while another thread calls
    :meth:`recent`.

    Example::

        forwarder = LogForwarder(other=console_lines.append)
        reader = LineReader(proc.stdout.fileno(), forwarder)
        ...
        raise MachineError("Firecracker died", log_tail=forwarder.recent(20))
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        vm_id: str | None = None,
        keep: int = 100,
        tz: tzinfo | None = None,
        on_record: Callable[[LogRecord], object] | None = None,
        other: Callable[[str], object] | None = None,
    ) -> None:
        self._logger = logger
        self._vm_id = vm_id
        self._tz = tz
        self._on_record = on_record
        self._other = other
        self._lines: deque[tuple[str, LogRecord | None]] = deque(maxlen=keep)
        self._last: LogRecord | None = None
        self._pending = ""  # the start of a console line cut by a log record
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        """Take one line (without newline) from Firecracker (a guest agent's token hidden)."""
        line = hide_token(line)
        if self._other is not None:
            self._take_mixed(line, self._other)
            return
        record = parse_log_line(line, tz=self._tz)
        if record is None:
            if self._last is None:
                self._keep(line, None)
                target = self._logger or logging.getLogger(VMM_LOGGER)
                extra = {"vm_id": self._vm_id} if self._vm_id is not None else None
                target.info("%s", line, extra=extra)
                return
            record = dataclasses.replace(self._last, message=line)
        else:
            self._last = record
        self._emit(line, record)

    def flush(self) -> None:
        """Deliver to ``other`` a console line still waiting for its end.

        Only needed at the end of a stream shared with the console: see the
        class documentation.
        """
        if self._pending and self._other is not None:
            console, self._pending = self._pending, ""
            self._keep(console, None)
            self._other(console)

    def _take_mixed(self, line: str, other: Callable[[str], object]) -> None:
        match = _LINE.search(line)
        record = None if match is None else _record(match, self._tz)
        if match is None or record is None:
            console, self._pending = self._pending + line, ""
            self._keep(console, None)
            other(console)
            return
        # Firecracker wrote this record while the guest was in the middle of
        # a console line: the line's start precedes it, its end comes later.
        self._pending += line[: match.start()]
        self._emit(line[match.start() :], record)

    def _keep(self, line: str, record: LogRecord | None) -> None:
        with self._lock:
            self._lines.append((line, record))

    def _emit(self, line: str, record: LogRecord) -> None:
        self._keep(line, record)
        to_logging(record, self._logger, vm_id=self._vm_id)
        if self._on_record is not None:
            self._on_record(record)

    def recent(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines seen (all kept lines by default), oldest first, as written."""
        with self._lock:
            lines = [line for line, _ in self._lines]
        return lines if n is None else lines[-n:] if n > 0 else []

    def recent_records(self, n: int | None = None) -> list[LogRecord]:
        """The last ``n`` log records among the kept lines, oldest first."""
        with self._lock:
            records = [record for _, record in self._lines if record is not None]
        return records if n is None else records[-n:] if n > 0 else []
