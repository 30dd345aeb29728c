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
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Console", "ConsoleKind"]


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

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Console:
        """Append the console to the file at ``path``."""
        return cls(ConsoleKind.FILE, path=Path(path))

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
