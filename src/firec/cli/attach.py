"""``firec attach VM``: the serial console of a detached microVM, input included.

Firecracker reads the guest's serial input from its standard input. A VM
that ``firec run -d`` (or ``restore -d``, ``clone -d``) starts gets a fifo
for it, ``console.in`` beside its ``console.log`` in the VM's directory
(:func:`detached_console`; see :mod:`firec.vm.console`), made by firec and
removed with the VM. ``attach`` copies what is typed to that fifo and what
the guest prints (the console file) to the terminal, until:

* the detach keys are typed (default ``ctrl-p,ctrl-q``, as ``docker
  attach``): firec leaves, the VM runs on;
* the VM exits: firec says so and leaves;
* standard input is not a terminal and Ctrl-C (SIGINT) arrives.

On a terminal, it is put in raw mode (every key, Ctrl-C included, goes to
the guest; output still turns ``\\n`` into a new line) and restored on the way
out. When standard input ends (a pipe), input stops and output goes on.

Example::

    >>> parse_detach_keys("ctrl-p,ctrl-q")
    b'\\x10\\x11'
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from firec.cli.follow import read_tail
from firec.cli.output import ExitCode, err, fail
from firec.cli.vms import console_path, resolve
from firec.errors import ConfigError, FirecError
from firec.vm.console import Console, open_console_input

__all__ = [
    "DEFAULT_DETACH_KEYS",
    "INPUT_NAME",
    "attach",
    "detached_console",
    "parse_detach_keys",
    "relay",
]

#: The detach keys when none are given: as ``docker attach``.
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
#: The console input fifo's name, beside the console file.
INPUT_NAME = "console.in"

_POLL = 0.05
_ALIVE_EVERY = 0.5


def detached_console(vm_dir: Path) -> Console:
    """The console of a detached VM: ``console.log``, with the input fifo ``console.in``.

    Example::

        >>> detached_console(Path("/run/firec/vm1")).input
        PosixPath('/run/firec/vm1/console.in')
    """
    return Console.file(vm_dir / "console.log", input=vm_dir / INPUT_NAME)


def parse_detach_keys(spec: str) -> bytes:
    """The bytes of a detach sequence: comma-separated ``ctrl-X`` or single characters.

    Example::

        >>> parse_detach_keys("ctrl-a,d"), parse_detach_keys("ctrl-@,ctrl-[")
        (b'\\x01d', b'\\x00\\x1b')
    """
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if key.lower().startswith("ctrl-") and len(key) == 6:
            code = ord(key[5].upper()) ^ 0x40
            if not 0 <= code < 0x20:
                raise ConfigError("--detach-keys", f"{key!r} is no control key (ctrl-a ... ctrl-_)")
            out.append(code)
        elif len(key) == 1 and key.isascii():
            out.append(ord(key))
        else:
            raise ConfigError(
                "--detach-keys", f"{key!r}: give ctrl-X or one character, comma-separated"
            )
    if not out:
        raise ConfigError("--detach-keys", "give at least one key")
    return bytes(out)


class _DetachMatcher:
    """Holds back what may start the detach sequence; says when it was typed whole."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """What to send of ``data``, and whether the detach sequence is complete."""
        send = bytearray()
        for byte in data:
            candidate = self.held + bytes([byte])
            if self.keys.startswith(candidate):
                self.held = candidate
                if candidate == self.keys:
                    self.held = b""
                    return bytes(send), True
                continue
            send += self.held
            self.held = b""
            if self.keys.startswith(bytes([byte])):
                self.held = bytes([byte])
            else:
                send.append(byte)
        return bytes(send), False


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Raw input on the terminal ``fd`` (output processing kept), restored afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        mode = termios.tcgetattr(fd)
        mode[1] |= termios.OPOST | termios.ONLCR  # "\n" still starts a new line
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(
    stdin: int | None,
    fifo: int,
    console: Path,
    offset: int,
    sink: int,
    alive: Callable[[], bool],
    detach_keys: bytes,
) -> str:
    """Copy ``stdin`` to the VM's input ``fifo`` and its ``console`` (from ``offset``) to ``sink``.

    Returns why it stopped: ``"detached"`` (the detach keys) or ``"exited"``
    (``alive()`` turned false; the console is read to its end first).
    """
    matcher = _DetachMatcher(detach_keys)
    pending = b""
    checked = 0.0
    with console.open("rb") as log:
        log.seek(offset)
        while True:
            readers = [stdin] if stdin is not None else []
            writers = [fifo] if pending and fifo >= 0 else []
            ready, writable, _ = select.select(readers, writers, [], _POLL)
            if stdin is not None and stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    stdin = None  # the input ended: the output goes on
                else:
                    send, done = matcher.feed(data)
                    pending += send
                    if done:
                        _send(fifo, pending)
                        return "detached"
            if writable:
                pending = _send(fifo, pending)
            while chunk := log.read(1 << 16):
                _write_all(sink, chunk)
            now = time.monotonic()
            if now - checked >= _ALIVE_EVERY:
                checked = now
                if not alive():
                    while chunk := log.read(1 << 16):
                        _write_all(sink, chunk)
                    return "exited"


def _send(fifo: int, data: bytes) -> bytes:
    """Write what the fifo takes now; return the rest (all of it dropped if no VMM reads)."""
    try:
        written = os.write(fifo, data) if data else 0
    except BlockingIOError:
        return data
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return b""  # the VMM is gone: the loop sees it exit
        raise
    return data[written:]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (AttributeError, OSError, ValueError):  # not a file (a test runner's stand-in)
        return None


def attach(
    ctx: typer.Context,
    vm: Annotated[str, typer.Argument(help="The microVM id (or a unique start of it).")],
    detach_keys: Annotated[
        str,
        typer.Option(help="The keys that leave the console, the VM running on (comma-separated)."),
    ] = DEFAULT_DETACH_KEYS,
    lines: Annotated[
        int, typer.Option("--tail", "-n", help="Start with the last N lines of output.", min=0)
    ] = 10,
) -> None:
    """Attach this terminal to a detached microVM's serial console, input included.

    What you type goes to the guest's serial input (Firecracker's standard
    input), what it prints comes here. Type the detach keys (ctrl-p ctrl-q by
    default) to leave: the VM runs on. On a terminal, every other key, Ctrl-C
    included, goes to the guest. For VMs started with firec run -d, restore -d
    or clone -d.
    """
    keys = parse_detach_keys(detach_keys)
    record = resolve(ctx.obj, vm)
    log = console_path(record)
    if not record.vmm_alive():
        fail(ExitCode.WRONG_STATE, f"microVM {record.vm_id} is not running")
    try:
        fifo = open_console_input(log.with_name(INPUT_NAME))
    except FirecError as exc:
        fail(
            ExitCode.WRONG_STATE,
            f"cannot attach to microVM {record.vm_id}: {exc}",
            f"only its output can be followed: firec console {record.vm_id}",
        )
    try:
        data, offset = read_tail(log, lines)
        os.write(sys.stdout.fileno(), data)
        stdin = _stdin_fd()
        try:
            with _raw(stdin) if stdin is not None else contextlib.nullcontext():
                if stdin is not None and os.isatty(stdin):  # raw already: no key is lost
                    err.print(f"[dim]firec: attached to {record.vm_id}; {detach_keys} leaves[/]")
                why = relay(stdin, fifo, log, offset, sys.stdout.fileno(), record.vmm_alive, keys)
        except KeyboardInterrupt:
            why = "interrupted"
    finally:
        os.close(fifo)
    if why == "exited":
        err.print(f"\n[dim]firec: microVM {record.vm_id} exited[/]")
    else:
        err.print(f"\n[dim]firec: detached from microVM {record.vm_id}; it runs on[/]")
