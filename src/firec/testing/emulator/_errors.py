"""The errors a VMM action answers with, and the Rust texts of OS errors in them.

An action Firecracker refuses answers with a fault message (HTTP 400, or 413
for an MMDS store that overflows); most messages changed shape in 1.6 (a
"<what> error: " prefix), which :func:`action_error` picks by release.
"""

from __future__ import annotations

import os

from ._release import Release

__all__ = [
    "POSTBOOT_ONLY",
    "PREBOOT_ONLY",
    "ActionError",
    "action_error",
    "io_debug",
    "os_error",
]

PREBOOT_ONLY = "The requested operation is not supported before starting the microVM."
POSTBOOT_ONLY = "The requested operation is not supported after starting the microVM."


class ActionError(Exception):
    """A VMM action refused: ``message`` is Firecracker's fault_message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def action_error(
    rel: Release, modern_prefix: str, message: str, legacy: str | None = None
) -> ActionError:
    """``<modern_prefix>: <message>`` on modern releases; before, ``legacy`` (or ``message``)."""
    if rel.modern:
        return ActionError(f"{modern_prefix}: {message}")
    return ActionError(legacy if legacy is not None else message)


def os_error(exc: OSError) -> str:
    """Rust's io::Error display: ``No such file or directory (os error 2)``."""
    return f"{os.strerror(exc.errno or 0)} (os error {exc.errno})"


_KINDS = {2: "NotFound", 13: "PermissionDenied", 98: "AddrInUse"}


def io_debug(exc: OSError) -> str:
    """Rust's io::Error Debug: ``Os { code: 2, kind: NotFound, message: "..." }``."""
    kind = _KINDS.get(exc.errno or 0, "Other")
    msg = "Address in use" if exc.errno == 98 else os.strerror(exc.errno or 0)
    return f'Os {{ code: {exc.errno}, kind: {kind}, message: "{msg}" }}'
