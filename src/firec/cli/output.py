"""What the command line prints, and how it ends: exit codes, errors, tables, JSON."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from firec.errors import (
    ConfigError,
    InUseError,
    MachineError,
    NoFitError,
    TimeoutError,
    ValidationError,
)

__all__ = [
    "DEBUG_ENV",
    "EPILOG",
    "CliError",
    "ExitCode",
    "download_progress",
    "err",
    "exit_code_of",
    "fail",
    "out",
    "print_json",
    "report",
    "report_defect",
    "table",
    "warnings_on_stderr",
]

#: Set (to anything) to see the traceback of a defect instead of its one-line report.
DEBUG_ENV = "FIREC_DEBUG"

#: Standard output (tables, results) and standard error (errors, progress).
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


#: The exit codes, in words, under every command's help.
EPILOG = (
    "Exit status: 0 ok, 1 error, 2 usage (bad options or config), 3 host not ready "
    "(see firec doctor), 4 no such microVM, 5 wrong state (e.g. rm of a running VM), "
    "6 the VM failed (did not boot, or its VMM exited with an error), 7 timeout, "
    "130 interrupted."
)


class ExitCode(enum.IntEnum):
    """The exit status of ``firec``.

    * ``OK`` (0): done.
    * ``ERROR`` (1): something failed that none of the codes below names
      (Firecracker refused a request, a file could not be written, a defect
      of firec).
    * ``USAGE`` (2): the command line, or the VM it describes, is invalid
      (unknown option, missing kernel file, bad size, ambiguous VM id).
    * ``HOST_NOT_READY`` (3): this host, or this user, lacks something
      required (no Firecracker; no usable ``/dev/kvm``, even when it is why
      the VM did not boot; root for ``--jailer``; no host of a cluster can
      take the VM): the message says the fix, or what each host has free.
    * ``NO_SUCH_VM`` (4): no microVM has that id.
    * ``WRONG_STATE`` (5): the VM is not in a state that allows it (``rm`` of a
      running VM without ``-f``, ``pause`` of one that exited, an id taken).
    * ``VM_FAILED`` (6): the VM did not come up (the VMM exited, or
      Firecracker refused to boot it), or its VMM exited with an error or a
      signal (``firec run`` in the foreground).
    * ``TIMEOUT`` (7): something did not happen in time.
    * ``INTERRUPTED`` (130): stopped by Ctrl-C (the VM was stopped and removed).
    """

    OK = 0
    ERROR = 1
    USAGE = 2
    HOST_NOT_READY = 3
    NO_SUCH_VM = 4
    WRONG_STATE = 5
    VM_FAILED = 6
    TIMEOUT = 7
    INTERRUPTED = 130


class CliError(Exception):
    """A failure the command line reports with its own exit code and a hint."""

    def __init__(self, code: ExitCode, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


def fail(code: ExitCode, message: str, hint: str = "") -> NoReturn:
    """Stop the command with ``code``, printing ``message`` (and ``hint``)."""
    raise CliError(code, message, hint)


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code for an error of the library."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ConfigError | ValidationError):
        return ExitCode.USAGE
    if isinstance(exc, InUseError):
        return ExitCode.WRONG_STATE
    if isinstance(exc, NoFitError):
        return ExitCode.HOST_NOT_READY
    if isinstance(exc, TimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(exc, MachineError) and exc.exit_code is not None:
        return ExitCode.VM_FAILED
    return ExitCode.ERROR


def report(exc: BaseException) -> ExitCode:
    """Print ``exc`` for people on standard error; return its exit code."""
    code = exit_code_of(exc)
    message = exc.message if isinstance(exc, CliError) else str(exc)
    err.print(f"[bold red]error:[/] {_escape(message)}")
    tail = getattr(exc, "log_tail", None)
    if isinstance(exc, MachineError) and tail:
        err.print("[dim]Firecracker's last lines:[/]")
        for line in tail[-10:]:
            err.print(f"  [dim]{_escape(line)}[/]")
    hint = exc.hint if isinstance(exc, CliError) else ""
    if hint:
        err.print(f"[yellow]hint:[/] {_escape(hint)}")
    return code


def report_defect(exc: BaseException) -> ExitCode:
    """Print an unexpected exception (a defect of firec) in a line and a hint; return ERROR."""
    err.print(
        f"[bold red]error:[/] internal error (a defect of firec): "
        f"{_escape(type(exc).__name__)}: {_escape(str(exc))}"
    )
    err.print(
        f"[yellow]hint:[/] rerun with {DEBUG_ENV}=1 to see the traceback, and please report it"
    )
    return ExitCode.ERROR


class _Warnings(logging.Handler):
    """Shows firec's own warnings (not Firecracker's log lines, ``firec.vmm``) on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "firec.vmm" and not record.name.startswith("firec.vmm.")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(f"[yellow]warning:[/] {_escape(record.getMessage())}")
        except Exception:  # never let a warning break the command
            self.handleError(record)


@contextlib.contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """While the command runs, print the library's warnings (logger ``firec``) on stderr.

    A full disk losing a VM's console, a VMM firec had to end: the library
    says these through :mod:`logging`, which a command line must show.
    """
    handler = _Warnings()
    logger = logging.getLogger("firec")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on standard output (no colours: for scripts)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "") -> Table:
    """A plain table for people."""
    result = Table(title=title or None, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*(cell if isinstance(cell, Text) else Text(_cell(cell)) for cell in row))
    return result


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def download_progress() -> Progress:
    """A progress display for downloads, on standard error, gone when done.

    Example::

        with download_progress() as progress:
            install_firecracker(progress=progress)
    """
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=err, transient=True)
