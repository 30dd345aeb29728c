"""Firecracker's own logs and metrics: :class:`Logger`, :class:`Metrics`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from firec.api.models.base import APIModel, EnumText, HostPath, StrictBool, StrictStr

__all__ = ["LogLevel", "Logger", "Metrics"]


class LogLevel(StrEnum):
    """Firecracker log level (``Logger.level``); parsed case-insensitively.

    ``TRACE`` and ``OFF`` exist since Firecracker 1.5.
    """

    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"
    DEBUG = "Debug"
    TRACE = "Trace"
    OFF = "Off"

    @classmethod
    def _missing_(cls, value: object) -> LogLevel | None:
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None


class Logger(APIModel):
    """Where and how Firecracker writes its human readable log.

    Endpoint: ``PUT /logger`` (before boot). Firecracker before 1.6 requires
    ``log_path``.
    """

    log_path: HostPath | None = Field(
        default=None,
        description="Path to the named pipe or file for the human readable log output.",
    )
    level: Annotated[LogLevel, EnumText] | None = Field(
        default=None, description="Set the level. The possible values are case-insensitive."
    )
    show_level: StrictBool | None = Field(
        default=None, description="Whether or not to output the level in the logs."
    )
    show_log_origin: StrictBool | None = Field(
        default=None,
        description=(
            "Whether or not to include the file path and line number of the log's origin."
        ),
    )
    module: StrictStr | None = Field(
        default=None,
        description=(
            "The module path to filter log messages by, e.g. api_server::request "
            "(Firecracker 1.6+)."
        ),
    )


class Metrics(APIModel):
    """Where Firecracker flushes its JSON metrics.

    Endpoint: ``PUT /metrics`` (before boot); flushed by the ``FlushMetrics`` action.
    """

    metrics_path: HostPath = Field(
        description="Path to the named pipe or file where the JSON-formatted metrics are flushed."
    )
