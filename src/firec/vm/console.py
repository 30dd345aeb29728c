"""Where a microVM's serial console goes.

Firecracker writes the guest's serial console (``ttyS0``) to its standard
output. firec sends it to one of:

* :meth:`Console.file`: a file (the default: ``console.log`` in the VM's
  directory). No reader runs; read the file whenever you like.
* :meth:`Console.callback`: a function called with each line.
* :meth:`Console.stream`: a function called with the bytes as they come
  (prompts that end without a newline, escape sequences, binary data).
* :meth:`Console.terminal`: the caller's own standard output.
* :meth:`Console.discard`: nowhere.

Firecracker reads the guest's serial *input* from its standard input. A
console can name an input fifo (``Console.file(path, input=fifo)``): firec
makes the fifo when it starts the VMM, hands it to Firecracker as standard
input, and removes it with the VM; any process may then write to the guest's
console through it (:func:`open_console_input`; ``firec attach`` does). The
VMM holds the fifo open for reading *and* writing, so a writer that goes away
is no end of input for it: Firecracker stops reading its standard input for
good at the first end of file. A terminal console reads the terminal instead.

Firecracker writes a console file (and its log) itself and ignores write
errors: on a full filesystem the output is lost without a word. firec then
warns on the logger ``firec.vm``, naming the files (the command line
prints it on standard error).

Example::

    import firec
    from firec.vm.console import Console

    lines: list[str] = []
    config = (
        firec.Config.builder("vm-1", "/srv/images/vmlinux")
        .console(Console.callback(lines.append))
        .build()
    )
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from firec.errors import ConfigError, FirecError

__all__ = ["Console", "ConsoleKind", "open_console_input", "open_vmm_input"]


class ConsoleKind(enum.StrEnum):
    """The destinations of the serial console."""

    FILE = "file"
    CALLBACK = "callback"
    TERMINAL = "terminal"
    DISCARD = "discard"


@dataclass(frozen=True)
class Console:
    """A destination for the serial console; make one with the class methods."""

    kind: ConsoleKind
    path: Path | None = None
    on_line: Callable[[str], object] | None = None
    on_output: Callable[[bytes], object] | None = None
    #: A fifo Firecracker reads the guest's serial input from (made when it starts).
    input: Path | None = None

    @classmethod
    def file(
        cls, path: str | os.PathLike[str], *, input: str | os.PathLike[str] | None = None
    ) -> Console:
        """Append the console to the file at ``path``; read its input from the fifo ``input``.

        Example::

            >>> Console.file("/run/vm/console.log", input="/run/vm/console.in").input
            PosixPath('/run/vm/console.in')
        """
        return cls(ConsoleKind.FILE, path=Path(path), input=None if input is None else Path(input))

    def with_input(self, fifo: str | os.PathLike[str]) -> Console:
        """This console, with its serial input read from the fifo ``fifo``.

        Raises:
            ConfigError: a terminal console, which reads the terminal.
        """
        if self.kind is ConsoleKind.TERMINAL:
            raise ConfigError("console.input", "a terminal console reads the terminal's input")
        return replace(self, input=Path(fifo))

    @classmethod
    def callback(cls, on_line: Callable[[str], object]) -> Console:
        """Call ``on_line`` with each console line (without its newline).

        It runs in a reader thread with :class:`~firec.Machine`, on the event
        loop with :class:`~firec.AsyncMachine` (keep it quick there).
        """
        return cls(ConsoleKind.CALLBACK, on_line=on_line)

    @classmethod
    def stream(cls, on_output: Callable[[bytes], object]) -> Console:
        """Call ``on_output`` with the console's bytes as Firecracker writes them.

        Nothing waits for a newline: a shell's ``login:`` prompt arrives as
        soon as it is printed, escape sequences and binary data unchanged.
        Firecracker writes the guest's serial output about a byte at a time,
        so expect many small pieces. Called where :meth:`callback` is.

        Example::

            import sys
            from firec.vm.console import Console

            relay = Console.stream(sys.stdout.buffer.write)
        """
        return cls(ConsoleKind.CALLBACK, on_output=on_output)

    @classmethod
    def terminal(cls) -> Console:
        """Show the console on the caller's standard output."""
        return cls(ConsoleKind.TERMINAL)

    @classmethod
    def discard(cls) -> Console:
        """Throw the console away."""
        return cls(ConsoleKind.DISCARD)


def open_vmm_input(console: Console) -> int | None:
    """The descriptor to give the VMM as standard input for ``console``'s input, if it has one.

    Makes the fifo (mode 0600) unless it exists, and opens it for reading and
    writing: that never blocks, and the VMM, holding a writer itself, never
    sees the end of its input. The caller closes the descriptor once the
    VMM has it.

    Raises:
        FirecError: the path exists and is not a fifo, or cannot be made.
    """
    fifo = console.input
    if fifo is None:
        return None
    try:
        os.mkfifo(fifo, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(os.stat(fifo).st_mode):
            raise FirecError(f"{fifo}: exists and is not a fifo (the console's input)") from None
    except OSError as exc:
        raise FirecError(f"cannot make the console input {fifo}: {exc.strerror}") from exc
    try:
        return os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise FirecError(f"cannot open the console input {fifo}: {exc.strerror}") from exc


def open_console_input(fifo: str | os.PathLike[str]) -> int:
    """Open a VM's console input fifo for writing (non-blocking); return the descriptor.

    Raises:
        FirecError: no such fifo (the VM was started without console input),
            or no VMM reads it (the VM is not running).

    Example::

        >>> open_console_input("/no/console.in")
        Traceback (most recent call last):
        ...
        firec.errors.FirecError: /no/console.in: no console input (the VM was started without one)
    """
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FirecError(f"{fifo}: no console input (the VM was started without one)") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise FirecError(
                f"{fifo}: no VMM reads the console input (is the VM running?)"
            ) from None
        raise FirecError(f"cannot open the console input {fifo}: {exc.strerror}") from exc
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise FirecError(f"{fifo}: not a fifo (the console's input)")
    return fd
