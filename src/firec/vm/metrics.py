"""Firecracker's metrics: one JSON object per line.

Once ``PUT /metrics`` (or ``--metrics-path``) names a file or fifo,
Firecracker writes a line when the guest boots, every 60 seconds, and on each
``PUT /actions {"action_type": "FlushMetrics"}``. Each line is a snapshot::

    {"utc_timestamp_ms":1795786739110,"api_server":{"process_startup_time_us":0,...},
     "block":{"read_bytes":0,...,"read_agg":{"min_us":0,"max_us":0,"sum_us":0},...},
     "block_rootfs":{...},"net":{...},"net_eth0":{...},"vcpu":{"exit_io_out":41,...},...}

Counters (``*_count``, ``*_fails``, ``*_bytes``, ``exit_io_out``...) are the
change since the previous line, not running totals; a few values are
latest measurements (``latencies_us``, ``*_agg`` minimum/maximum/sum in
microseconds, ``api_server.process_startup_time_us``).

Versions differ: 1.0 has neither per-drive ``block_<drive_id>`` nor
per-interface ``net_<iface_id>`` groups nor ``*_agg`` values; 1.14 adds groups
(``entropy``, ``pmem``, ``interrupts``, ``memory_hotplug``...) and drops
others' keys. :class:`MetricsSnapshot` therefore types the common groups,
keeps every other key, and never fails on a key it does not know.

Example::

    from firec.vm.metrics import MetricsForwarder
    from firec.vm.streams import LineReader

    metrics = MetricsForwarder()
    with LineReader("/run/fc/metrics.fifo", metrics):
        client.flush_metrics()
        ...
    print(metrics.latest.vcpu["exit_io_out"])
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    model_validator,
)

from firec.errors import ValidationError

__all__ = [
    "Counters",
    "MetricsForwarder",
    "MetricsSnapshot",
    "parse_metrics_line",
]

Counters = dict[str, int]
"""One metrics group: name -> integer value. A nested object is flattened into
dotted names: ``"read_agg": {"min_us": 3}`` becomes ``"read_agg.min_us": 3``."""

_log = logging.getLogger("firec.metrics")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _flatten(group: Mapping[str, Any], prefix: str = "") -> Counters:
    """Flatten one group into :data:`Counters`; values other than integers are left out."""
    out: Counters = {}
    for key, value in group.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out


class MetricsSnapshot(BaseModel):
    """One metrics line of Firecracker.

    Each group is a :data:`Counters` dict (missing groups are empty), e.g.
    ``snapshot.vcpu["exit_io_out"]`` or ``snapshot.block["read_agg.sum_us"]``.
    Groups this model does not name (``i8042``, ``deprecated_api``, per-device
    groups, groups of newer versions) are kept too: see :meth:`group`,
    :attr:`groups`, :attr:`drives`, :attr:`interfaces`; the line as parsed is
    in :attr:`raw`.

    Example::

        >>> s = MetricsSnapshot.model_validate(
        ...     {"utc_timestamp_ms": 1795786739110, "vcpu": {"exit_io_out": 41},
        ...      "block_rootfs": {"read_bytes": 512, "read_agg": {"min_us": 3}}}
        ... )
        >>> s.vcpu["exit_io_out"], s.drives["rootfs"]
        (41, {'read_bytes': 512, 'read_agg.min_us': 3})
        >>> s.time.isoformat()
        '2026-11-27T13:38:59.110000+00:00'
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    utc_timestamp_ms: int
    api_server: Counters = Field(default_factory=dict)
    balloon: Counters = Field(default_factory=dict)
    block: Counters = Field(default_factory=dict)
    entropy: Counters = Field(default_factory=dict)
    get_api_requests: Counters = Field(default_factory=dict)
    latencies_us: Counters = Field(default_factory=dict)
    logger: Counters = Field(default_factory=dict)
    mmds: Counters = Field(default_factory=dict)
    net: Counters = Field(default_factory=dict)
    patch_api_requests: Counters = Field(default_factory=dict)
    put_api_requests: Counters = Field(default_factory=dict)
    seccomp: Counters = Field(default_factory=dict)
    signals: Counters = Field(default_factory=dict)
    uart: Counters = Field(default_factory=dict)
    vcpu: Counters = Field(default_factory=dict)
    vmm: Counters = Field(default_factory=dict)
    vsock: Counters = Field(default_factory=dict)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _from_line(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not isinstance(data, Mapping):
            return handler(data)  # an instance being revalidated, or an error to report
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat[key] = _flatten(value) if isinstance(value, Mapping) else value
        snapshot = handler(flat)
        snapshot._raw = dict(data)
        return snapshot

    @property
    def raw(self) -> dict[str, Any]:
        """The metrics object as Firecracker wrote it (nested, every value kept)."""
        return self._raw

    @property
    def time(self) -> datetime:
        """When Firecracker wrote the line (``utc_timestamp_ms``), in UTC."""
        return _EPOCH + timedelta(milliseconds=self.utc_timestamp_ms)

    @property
    def groups(self) -> dict[str, Counters]:
        """Every group present in the line, named as in the line."""
        return {
            key: self.group(key) for key, value in self._raw.items() if isinstance(value, Mapping)
        }

    def group(self, name: str) -> Counters:
        """The group ``name`` (``"i8042"``, ``"block_rootfs"``...), empty if absent."""
        value = self._raw.get(name)
        return _flatten(value) if isinstance(value, Mapping) else {}

    @property
    def drives(self) -> dict[str, Counters]:
        """Per-drive groups by drive id (``block_<drive_id>``; Firecracker 1.1 or newer)."""
        return self._per_device("block_")

    @property
    def interfaces(self) -> dict[str, Counters]:
        """Per-interface groups by interface id (``net_<iface_id>``; Firecracker 1.1 or newer)."""
        return self._per_device("net_")

    def _per_device(self, prefix: str) -> dict[str, Counters]:
        return {
            key.removeprefix(prefix): self.group(key)
            for key, value in self._raw.items()
            if key.startswith(prefix) and isinstance(value, Mapping)
        }


def parse_metrics_line(line: str) -> MetricsSnapshot:
    """Parse one metrics line.

    Raises:
        ValidationError: the line is not a JSON object with an integer
            ``utc_timestamp_ms`` (field ``"metrics"``), or a group the model
            names is not an object (field ``"metrics.<group>"``).

    Example::

        >>> parse_metrics_line('{"utc_timestamp_ms": 1, "seccomp": {"num_faults": 0}}').seccomp
        {'num_faults': 0}
    """
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ValidationError("metrics", f"not a JSON line: {exc}: {line[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValidationError("metrics", f"not a JSON object: {line[:80]!r}")
    stamp = data.get("utc_timestamp_ms")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise ValidationError("metrics", f"no integer utc_timestamp_ms in {line[:80]!r}")
    try:
        return MetricsSnapshot.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = [
            (".".join(["metrics", *(str(part) for part in error["loc"])]), error["msg"])
            for error in exc.errors()
        ]
        raise ValidationError(*errors[0], errors=errors) from exc


class MetricsForwarder:
    """Parse metrics lines, keep the latest snapshot, optionally call back.

    An instance is a line callback for :class:`~firec.vm.streams.LineReader` and
    :class:`~firec.vm.streams.AsyncLineReader`. A line that does not parse is
    logged as a warning on the ``firec.vm.metrics`` logger and skipped (counted
    in :attr:`bad_lines`).

    Args:
        callback: called with each snapshot, in the reader's thread or loop.

    Example::

        metrics = MetricsForwarder(lambda s: print(s.time, s.vcpu.get("exit_io_out")))
        reader = LineReader(metrics_fifo, metrics)
    """

    def __init__(self, callback: Callable[[MetricsSnapshot], object] | None = None) -> None:
        self._callback = callback
        self._latest: MetricsSnapshot | None = None
        self._lock = threading.Lock()
        self.snapshots_seen = 0
        """How many snapshots were parsed."""
        self.bad_lines = 0
        """How many lines did not parse."""

    @property
    def latest(self) -> MetricsSnapshot | None:
        """The most recent snapshot, or ``None`` before the first."""
        with self._lock:
            return self._latest

    def __call__(self, line: str) -> None:
        """Take one line (without newline) from Firecracker's metrics output."""
        if not line.strip():
            return
        try:
            snapshot = parse_metrics_line(line)
        except ValidationError as exc:
            self.bad_lines += 1
            _log.warning("skipping a metrics line: %s", exc.reason)
            return
        with self._lock:
            self._latest = snapshot
            self.snapshots_seen += 1
        if self._callback is not None:
            self._callback(snapshot)
