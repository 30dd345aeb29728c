"""The simulated guest: what firec's tiny test guest prints and does on real Firecracker.

See :mod:`firec.testing.guest` for the protocol: ``firec-guest: booted``, one
``firec-guest: echo WORD`` line per ``firec.echo=WORD`` token, and a reset (the
VMM exits 0) when the command line holds the token ``firec.exit``.

One behaviour is the emulator's alone: with the token ``firec.echo-input`` on
the command line, the guest echoes its serial input (Firecracker's standard
input) back to its serial output as it comes, byte for byte, as a terminal in
echo mode would; at the end of the input it stops reading, as Firecracker
does. The real tiny guest never reads its input. This lets tests (and
``firec attach``'s) see console input go through a VM end to end.
"""

from __future__ import annotations

import os
import sys

__all__ = ["check_kernel", "echo_input", "echoes_input", "run", "run_time", "write_stdout"]

BOOT_LINE = "firec-guest: booted\n"
ECHO_TOKEN = "firec.echo="
EXIT_TOKEN = "firec.exit"
ECHO_INPUT_TOKEN = "firec.echo-input"


def run(boot_args: str) -> tuple[str, bool]:
    """The serial output of the guest for ``boot_args`` and whether it resets the VM."""
    lines = [BOOT_LINE]
    wants_exit = False
    for token in boot_args.split():
        if token == EXIT_TOKEN:
            wants_exit = True
        elif token.startswith(ECHO_TOKEN):
            lines.append(f"firec-guest: echo {token[len(ECHO_TOKEN) :]}\n")
    return "".join(lines), wants_exit


#: Seconds the guest takes to boot, and per byte it prints, before it resets: on real
#: Firecracker each byte is a VM exit to the serial device (about 60 to 100 us).
BOOT_TIME = 0.001
BYTE_TIME = 50e-6


def run_time(output: str) -> float:
    """How long the guest runs before it resets (``firec.exit``), printing ``output``."""
    return BOOT_TIME + BYTE_TIME * len(output)


def check_kernel(path: str) -> str | None:
    """Firecracker's ELF loader complaint about ``path``, or None when it would load."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
    except IsADirectoryError:
        return "Unable to read elf header"
    except OSError:
        return "Unable to read elf header"
    if len(header) < 64:
        return "Unable to read elf header"
    if header[:4] != b"\x7fELF":
        return "Invalid Elf magic number"
    if header[4] != 2:
        return "Invalid Elf format"
    return None


def write_stdout(text: str) -> None:
    """Serial console output goes to Firecracker's stdout."""
    data = text.encode()
    try:
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), data)
    except (OSError, ValueError):
        pass


def echoes_input(boot_args: str) -> bool:
    """Whether the guest echoes its serial input (the ``firec.echo-input`` token)."""
    return ECHO_INPUT_TOKEN in boot_args.split()


def echo_input() -> None:
    """Copy the serial input (stdin) to the serial output (stdout) until the input ends."""
    while True:
        try:
            data = os.read(0, 4096)
        except OSError:
            return
        if not data:
            return  # Firecracker too stops reading its input at the first end of file
        try:
            os.write(sys.stdout.fileno(), data)
        except (OSError, ValueError):
            return
