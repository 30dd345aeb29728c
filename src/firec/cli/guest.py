"""``firec exec`` and ``firec cp``: commands and files inside a running microVM.

Both reach the guest through firec's agent (``machine.exec``,
``machine.files``: :mod:`firec.vm._sync.guest`), on the vsock device of a
VM firec records (``firec run -d``). :func:`stream_command` runs a command
with its output streamed here as it comes (stdout to stdout, stderr to
stderr), stdin passed on, and with ``-t`` on a terminal a PTY in the guest
(raw mode here, resized with this terminal); ``firec run IMAGE -- CMD``
uses it too. The defaults a command runs with (environment, directory,
user) are the image's, as ``firec image build`` recorded them beside the
VM's root filesystem (:func:`image_defaults`).

Example::

    >>> parse_remote("vm1:/etc/hostname"), parse_remote("./local")
    (('vm1', '/etc/hostname'), None)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from firec.agent._sync.process import Process
from firec.cli.output import ExitCode, fail
from firec.cli.snapshots import attach
from firec.cli.vms import VmState, live_state, resolve
from firec.errors import ConfigError
from firec.host.registry import Registry
from firec.images.defaults import ImageDefaults, read_image_defaults, sidecar_path
from firec.vm._sync.machine import Machine
from firec.vm.config import Config

__all__ = [
    "close_guest",
    "command_env",
    "cp",
    "exec_command",
    "exit_status",
    "image_defaults",
    "parse_remote",
    "stream_command",
]

VmArgument = Annotated[str, typer.Argument(help="The microVM id (or a unique start of it).")]


def image_defaults(config: Config) -> ImageDefaults | None:
    """The defaults ``firec image build`` recorded for the VM's root filesystem, if any."""
    for drive in config.drives:
        if drive.is_root_device and drive.path_on_host is not None:
            record = sidecar_path(drive.path_on_host)
            if record.is_file():
                return read_image_defaults(record)
    return None


def exit_status(exit_code: int) -> int:
    """The exit status for a command's exit code: ``128 + N`` when signal ``N`` ended it."""
    return 128 - exit_code if exit_code < 0 else exit_code


def command_env(
    defaults: ImageDefaults | None, given: Sequence[str]
) -> dict[str, str | None] | None:
    """The environment of a command: the image's, then ``given`` (``KEY=VALUE``, or ``KEY``
    for this process's value)."""
    env: dict[str, str | None] = {}
    for item in (*(defaults.env if defaults else ()), *given):
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError("--env", f"{item!r}: give KEY=VALUE")
        env[key] = value if sep else os.environ.get(key)
    return env or None


@contextlib.contextmanager
def _raw_terminal(process: Process) -> Iterator[None]:
    """This terminal in raw mode, its size passed on to the guest's PTY as it changes."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resize(*_: object) -> None:
        size = shutil.get_terminal_size()
        with contextlib.suppress(ValueError, OSError):
            process.resize(size.lines, size.columns)

    previous = signal.signal(signal.SIGWINCH, resize)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


def _feed_stdin(process: Process) -> None:
    """Pass this process's stdin on until it ends (a thread: stdin has no timeout)."""
    try:
        while data := os.read(sys.stdin.fileno(), 65536):
            process.write_stdin(data)
        process.close_stdin()
    except (OSError, ValueError):
        pass  # the process ended, and its stdin with it


def _copy_out(chunks: Iterator[bytes], fd: int) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def stream_command(
    machine: Machine,
    argv: Sequence[str],
    *,
    env: dict[str, str | None] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    interactive: bool = False,
    terminal: bool = False,
    timeout: float | None = None,
) -> int:
    """Run ``argv`` in the guest, its output streamed here; its exit status (see above).

    ``interactive`` passes stdin on; ``terminal`` (with stdin a terminal)
    gives it a PTY, this terminal in raw mode meanwhile.
    """
    pty: bool | tuple[int, int] = False
    terminal = terminal and sys.stdin.isatty()
    if terminal:
        size = shutil.get_terminal_size()
        pty = (size.lines, size.columns)
    with machine.spawn(
        argv, env=env, cwd=cwd, user=user, stdin=interactive, pty=pty, timeout=timeout
    ) as process:
        if interactive:
            threading.Thread(target=_feed_stdin, args=(process,), daemon=True).start()
        with _raw_terminal(process) if terminal else contextlib.nullcontext():
            errors = threading.Thread(target=_copy_out, args=(process.stderr, 2), daemon=True)
            errors.start()
            _copy_out(process.stdout, 1)
            errors.join()
            result = process.wait()
    return exit_status(result.exit_code)


def close_guest(machine: Machine) -> None:
    """Close what :func:`attach` opened (the agent and API clients); the VM runs on."""
    machine.close_agent()
    machine.client.close()


def _running_machine(registry: Registry, vm: str) -> Machine:
    record = resolve(registry, vm)
    state = live_state(record)
    if state is not VmState.RUNNING:
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is {state.value}")
    return attach(registry, record)


def exec_command(
    ctx: typer.Context,
    vm: VmArgument,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Pass stdin on to the command.")
    ] = False,
    terminal: Annotated[
        bool, typer.Option("--tty", "-t", help="A PTY in the guest (when stdin is a terminal).")
    ] = False,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="Set a variable. Repeatable."),
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("--workdir", "-w", help="The directory it runs in.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="A user name, uid, or uid:gid.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds before it is killed (SIGKILL).")
    ] = None,
) -> None:
    """Run a command in a running microVM: `firec exec VM -- CMD ARGS`, output streamed here.

    The exit status is the command's (128+N when signal N ended it). Its
    environment, directory and user default to the image's (firec image
    build). The VM needs firec's agent: `firec run IMAGE` boots it.
    """
    machine = _running_machine(ctx.obj, vm)
    try:
        defaults = image_defaults(machine.config)
        code = stream_command(
            machine,
            command,
            env=command_env(defaults, env or []),
            cwd=workdir or (defaults.working_dir if defaults else None),
            user=user or (defaults.user if defaults else None),
            interactive=interactive,
            terminal=terminal,
            timeout=timeout,
        )
    finally:
        close_guest(machine)
    raise typer.Exit(code)


def parse_remote(spec: str) -> tuple[str, str] | None:
    """``(vm, path)`` for ``VM:/path``, or ``None`` for a local path."""
    vm, sep, path = spec.partition(":")
    if not sep or not vm or "/" in vm:
        return None
    return vm, path or "/"


def cp(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="VM:/path in the guest, or a local path.")],
    destination: Annotated[str, typer.Argument(help="A local path, or VM:/path in the guest.")],
) -> None:
    """Copy files and directories into or out of a running microVM.

    `firec cp VM:/path LOCAL` downloads, `firec cp LOCAL VM:/path` uploads;
    a directory is copied whole, into a destination directory that exists.
    """
    remote_source, remote_destination = parse_remote(source), parse_remote(destination)
    if (remote_source is None) == (remote_destination is None):
        fail(ExitCode.USAGE, "give one VM:/path and one local path", "firec cp --help")
    if remote_source is not None:
        vm, path = remote_source
        local = Path(destination)
        machine = _running_machine(ctx.obj, vm)
        try:
            if local.is_dir():
                local = local / PurePosixPath(path).name
            machine.files.download(path, local)
        finally:
            close_guest(machine)
        return
    assert remote_destination is not None
    vm, path = remote_destination
    local = Path(source)
    if not local.exists():
        fail(ExitCode.USAGE, f"{source}: no such file or directory")
    machine = _running_machine(ctx.obj, vm)
    try:
        if machine.files.exists(path) and machine.files.stat(path).type == "directory":
            path = str(PurePosixPath(path) / local.resolve().name)
        machine.files.upload(local, path)
    finally:
        close_guest(machine)
