"""The jailer emulator's process: :func:`main`, its console entry point."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from ._args import VERSION, ArgError, formatted_help, parse_args
from ._jail import Jail, process_cpu_us
from ._panic import Panic

__all__ = ["main"]


def _close_inherited_fds() -> None:
    for entry in os.listdir("/proc/self/fd"):
        if int(entry) > 2:
            with contextlib.suppress(OSError):
                os.close(int(entry))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the jailer emulator with the jailer's command line (console entry point)."""
    start_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    start_cpu_us = process_cpu_us()
    _close_inherited_fds()
    try:
        args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    except ArgError as exc:
        sys.stdout.write(f"Arguments parsing error: {exc} \n\nFor more information try --help.\n")
        sys.stdout.flush()
        os._exit(1)
    if args.get("help"):
        sys.stdout.write(formatted_help())
        sys.stdout.flush()
        os._exit(0)
    if args.get("version"):
        sys.stdout.write(f"Jailer v{VERSION}\n\n")
        sys.stdout.flush()
        os._exit(0)
    try:
        Jail.from_args(args, extra).run(start_us, start_cpu_us)
    except Panic as panic:
        panic.die()
