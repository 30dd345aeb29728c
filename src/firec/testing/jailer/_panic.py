"""How the jailer fails: a Rust panic on stderr and SIGABRT, and the OS error texts in it.

Every error of the jailer but a command line its parser refuses is a panic
(:class:`Panic`): ``Jailer error: ...`` (:func:`jailer_error`), or the
``.unwrap()`` of a failed cgroup operation (:func:`unwrap`), with OS errors as
the Rust of jailer v1.0.0 displays them (:func:`os_error`, :func:`io_debug`).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["Panic", "io_debug", "jailer_error", "os_error", "unwrap"]

# errno -> std::io::ErrorKind as the Rust of jailer v1.0.0 names it
_ERROR_KINDS = {
    1: "PermissionDenied",
    2: "NotFound",
    4: "Interrupted",
    11: "WouldBlock",
    13: "PermissionDenied",
    17: "AlreadyExists",
    22: "InvalidInput",
    32: "BrokenPipe",
}


class Panic(Exception):
    """The jailer panics: ``text`` at ``where``."""

    def __init__(self, text: str, where: str = "src/jailer/src/main.rs:435:27") -> None:
        super().__init__(text)
        self.text = text
        self.where = where

    def die(self) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.write(
            f"thread 'main' panicked at '{self.text}', {self.where}\n"
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
        )
        sys.stderr.flush()
        os.abort()


def jailer_error(message: str) -> Panic:
    return Panic(f"Jailer error: {message}")


def os_error(exc: OSError) -> str:
    """An OS error as Rust displays it: ``No such file or directory (os error 2)``."""
    code = exc.errno or 0
    return f"{os.strerror(code)} (os error {code})"


def io_debug(exc: OSError) -> str:
    code = exc.errno or 0
    kind = _ERROR_KINDS.get(code, "Other")
    return f'Os {{ code: {code}, kind: {kind}, message: "{os.strerror(code)}" }}'


def unwrap(error: str, path: str, exc: OSError, where: str) -> Panic:
    """The panic of ``.unwrap()`` on a cgroup error ``error(path, exc)``."""
    return Panic(
        f'called `Result::unwrap()` on an `Err` value: {error}("{path}", {io_debug(exc)})', where
    )
