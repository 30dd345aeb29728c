"""Firecracker's logger: same line format, levels, targets and defaults per release.

A line is ``<local time, ns> [<instance id>:<thread>(:<LEVEL>)(:<file>:<line>)] <message>``.
From 1.6 on the logger writes to stdout until ``--log-path`` / ``PUT /logger`` gives it
a file or fifo, at level Info, without level or origin. Before that (1.0-1.5) errors
and warnings go to stderr with level and origin until the logger is initialised
(once only), and the level defaults to Warning.
"""

from __future__ import annotations

import os
import sys
import time

from firec.testing.emulator._jail import host_path
from firec.testing.emulator._release import Release

__all__ = ["LEVELS", "LEVEL_NAMES", "Logger", "open_nonblocking", "timestamp"]

LEVELS = {"Off": 0, "Error": 1, "Warn": 2, "Info": 3, "Debug": 4, "Trace": 5}
#: The level names Firecracker takes from 1.5 on (``--level``, ``PUT /logger``), lowercased.
LEVEL_NAMES = {
    "off": "Off",
    "trace": "Trace",
    "debug": "Debug",
    "info": "Info",
    "warn": "Warn",
    "warning": "Warn",
    "error": "Error",
}
_NAMES = {1: "ERROR", 2: "WARN", 3: "INFO", 4: "DEBUG", 5: "TRACE"}


def timestamp() -> str:
    """Local time like Firecracker's ``LocalTime``: ``2026-11-27T13:31:17.495746781``."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(secs)) + f".{frac:09d}"


def open_nonblocking(path: str, *, create: bool) -> int:
    """Open a log/metrics target the way Firecracker does (O_NONBLOCK, read-write).

    Read-write is what lets a fifo open without a reader. Raises OSError.
    """
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(host_path(path), flags, 0o644)


class Logger:
    """The process-wide logger of one emulated Firecracker."""

    def __init__(self, rel: Release, instance_id: str = "anonymous-instance") -> None:
        self.rel = rel
        self.instance_id = instance_id
        self.fd: int | None = None
        self.module: str | None = None
        self.initialized = False
        self.missed = 0
        if rel.at_least(5):
            self.level = LEVELS["Info"]
            self.show_level = False
            self.show_origin = False
        else:
            self.level = LEVELS["Warn"]
            self.show_level = True
            self.show_origin = True

    # --- configuration ---

    def update(
        self,
        *,
        log_path: str | None,
        level: str | None,
        show_level: bool | None,
        show_origin: bool | None,
        module: str | None = None,
    ) -> None:
        """Modern (1.5+) ``LoggerConfig`` semantics; raises OSError when the path fails."""
        fd = open_nonblocking(log_path, create=True) if log_path is not None else None
        self.level = LEVELS[level] if level is not None else LEVELS["Info"]
        if fd is not None:
            if self.fd is not None:
                os.close(self.fd)
            self.fd = fd
        if show_level is not None:
            self.show_level = show_level
        if show_origin is not None:
            self.show_origin = show_origin
        if module is not None:
            self.module = module

    def init_legacy(self, log_path: str, level: str, show_level: bool, show_origin: bool) -> None:
        """Legacy (1.0-1.4) one-time initialisation; the header line is written raw.

        The level and format change even when opening the target fails, as in 1.0.
        """
        self.level = LEVELS["Warn" if level == "Warning" else level]
        self.show_level = show_level
        self.show_origin = show_origin
        self.fd = open_nonblocking(log_path, create=False)
        self.initialized = True
        self._write(f"Running Firecracker v{self.rel.version}\n", to_stderr=False)

    # --- writing ---

    def enabled(self, level: int) -> bool:
        return level <= self.level

    def log(
        self,
        level: str,
        message: str,
        *,
        thread: str = "main",
        origin: str = "src/vmm/src/lib.rs:1",
        module: str = "vmm",
        force: bool = False,
    ) -> None:
        """Write one line if ``level`` passes the filter.

        ``force`` is Firecracker's ``*_unrestricted`` macros: written whatever the level.
        """
        lvl = LEVELS[level]
        if not force and not self.enabled(lvl):
            return
        if self.module is not None and not module.startswith(self.module):
            return
        parts = [self.instance_id, thread] if self.instance_id else [thread]
        if self.show_level:
            parts.append(_NAMES[lvl])
        if self.show_origin:
            parts.append(origin)
        line = f"{timestamp()} [{':'.join(parts)}] {message}\n"
        self._write(line, to_stderr=lvl <= LEVELS["Warn"] and not self.rel.at_least(5))

    def error(self, message: str, **kw: str) -> None:
        self.log("Error", message, **kw)  # type: ignore[arg-type]

    def warn(self, message: str, **kw: str) -> None:
        self.log("Warn", message, **kw)  # type: ignore[arg-type]

    def info(self, message: str, **kw: str) -> None:
        self.log("Info", message, **kw)  # type: ignore[arg-type]

    def debug(self, message: str, **kw: str) -> None:
        self.log("Debug", message, **kw)  # type: ignore[arg-type]

    def _write(self, line: str, *, to_stderr: bool) -> None:
        data = line.encode()
        if self.fd is not None:
            try:
                os.write(self.fd, data)
            except OSError:  # EAGAIN, EPIPE, ENOSPC...: Firecracker counts the line as missed
                self.missed += 1
            return
        stream = sys.stderr if to_stderr else sys.stdout
        try:
            stream.write(line)
            stream.flush()
        except OSError:
            self.missed += 1

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
