"""The ``firec`` command: its commands, global options and error handling."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.exceptions

from firec.cli import attach, follow, guest, hostcmds, manage, run, snapshots
from firec.cli.clustercmds import cluster_app
from firec.cli.imagecmds import image_app
from firec.cli.kernelcmds import kernel_app
from firec.cli.output import (
    DEBUG_ENV,
    EPILOG,
    CliError,
    ExitCode,
    report,
    report_defect,
    warnings_on_stderr,
)
from firec.cli.runconfig import NETWORK_STATE
from firec.errors import FirecError
from firec.host.registry import Registry

__all__ = ["app", "main"]


app = typer.Typer(
    name="firec",
    help="Run and manage Firecracker microVMs.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn firec's errors into a message on stderr and the documented exit code.

    Anything else is a defect of firec: it is reported in one line too (exit 1),
    with its traceback only when ``FIREC_DEBUG`` is set.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CliError, FirecError) as exc:
            raise typer.Exit(int(report(exc))) from exc
        except KeyboardInterrupt:
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except OSError as exc:
            raise typer.Exit(int(report(exc))) from exc
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # typer's own ways to end: exit codes and usage errors
        except Exception as exc:
            # a defect of firec: a message, never a traceback (unless FIREC_DEBUG asks for it)
            if os.environ.get(DEBUG_ENV):
                raise
            raise typer.Exit(int(report_defect(exc))) from exc

    return wrapper  # type: ignore[return-value]


def _add(target: typer.Typer, func: Callable[..., Any], name: str) -> None:
    target.command(name, epilog=EPILOG)(handle_errors(func))


@app.callback()
def options(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="FIREC_STATE_DIR",
            help="Where firec records its microVMs (default: /run/firec/state for root, "
            "else ~/.local/state/firec) and, when given, their network leases.",
        ),
    ] = None,
) -> None:
    """Run and manage Firecracker microVMs."""
    ctx.obj = Registry(state_dir)
    # an explicit state directory holds the network state (leases, records) too
    ctx.meta[NETWORK_STATE] = ctx.obj.network_dir if state_dir is not None else None


_add(app, run.run, "run")
_add(app, guest.exec_command, "exec")
_add(app, guest.cp, "cp")
_add(app, manage.ls, "ls")
_add(app, manage.inspect, "inspect")
_add(app, manage.stop_command, "stop")
_add(app, manage.kill, "kill")
_add(app, manage.pause, "pause")
_add(app, manage.resume, "resume")
_add(app, snapshots.snapshot, "snapshot")
_add(app, snapshots.restore, "restore")
_add(app, snapshots.clone, "clone")
_add(app, follow.console, "console")
_add(app, attach.attach, "attach")
_add(app, follow.logs, "logs")
_add(app, follow.metrics, "metrics")
_add(app, manage.rm, "rm")
_add(app, manage.gc, "gc")
_add(app, hostcmds.doctor, "doctor")
_add(app, hostcmds.install_command, "install")
_add(app, hostcmds.version, "version")
for _command in (
    image_app.registered_commands + kernel_app.registered_commands + cluster_app.registered_commands
):
    assert _command.callback is not None
    _command.callback = handle_errors(_command.callback)
app.add_typer(image_app, name="image")
app.add_typer(kernel_app, name="kernel")
app.add_typer(cluster_app, name="cluster")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``firec`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        with warnings_on_stderr():
            app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="firec")
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return int(ExitCode.ERROR)
    return 0
