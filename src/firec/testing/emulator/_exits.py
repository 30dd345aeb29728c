"""How an emulated Firecracker process ends: exit status, fatal error or panic.

Firecracker's ``main()`` returns an error (:class:`Fatal`: logged, printed,
exit status) or panics (logged, then SIGABRT); either way, and on a clean
exit, modern releases log the exit status last. :class:`Exits` does those for
the process (:class:`._process.Process`).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from ._log import Logger
from ._release import Release

__all__ = ["Exits", "Fatal", "io_debug"]


class Fatal(Exception):
    """Firecracker's main() returning an error: display text, Debug text, exit code."""

    def __init__(self, display: str, debug: str, code: int) -> None:
        super().__init__(display)
        self.display = display
        self.debug = debug
        self.code = code


def io_debug(exc: OSError) -> str:
    """Rust's io::Error Debug as Firecracker's main() prints it: ``Os { code: 2, kind: ... }``."""
    kinds = {
        2: "NotFound",
        13: "PermissionDenied",
        17: "AlreadyExists",
        20: "NotADirectory",
        21: "IsADirectory",
    }
    kind = kinds.get(exc.errno or 0, "Other")
    return f'Os {{ code: {exc.errno}, kind: {kind}, message: "{os.strerror(exc.errno or 0)}" }}'


class Exits:
    """The exits of a process whose release is ``rel`` and logger ``log``."""

    rel: Release
    log: Logger

    def finish(self, code: int) -> NoReturn:
        if self.rel.modern:
            if code == 0:
                self.log.log("Info", "Firecracker exiting successfully. exit_code=0", force=True)
            else:
                self.log.log(
                    "Error", f"Firecracker exiting with error. exit_code={code}", force=True
                )
        sys.stdout.flush()
        os._exit(code)

    def fail(self, fatal: Fatal) -> NoReturn:
        if self.rel.at_least(5):
            self.log.log(
                "Error", fatal.display, force=True, origin="src/firecracker/src/main.rs:112"
            )
            sys.stderr.write(f"Error: {fatal.debug}\n")
            sys.stderr.flush()
        else:
            self.log.log(
                "Error", fatal.display, force=True, origin="src/firecracker/src/main.rs:213"
            )
        self.finish(fatal.code)

    def panic(self, where: str, message: str) -> NoReturn:
        if self.rel.modern:
            text = f"Firecracker panicked at {where}:\n{message}"
        else:
            text = f"Firecracker panicked at '{message}', {where}"
        self.log.log("Error", text, force=True, origin="src/firecracker/src/main.rs:91")
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.abort()
