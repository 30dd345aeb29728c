"""Which Firecracker release the emulator imitates, and what that release has."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DEFAULT_MINOR", "ENV_VAR", "NEWEST_PATCH", "Release", "parse_release"]

ENV_VAR = "FIREC_EMULATOR_VERSION"
"""Environment variable naming the emulated version when ``--emulate-version`` is absent."""

NEWEST_PATCH: dict[int, int] = {
    0: 2,
    1: 4,
    2: 1,
    3: 3,
    4: 1,
    5: 1,
    6: 0,
    7: 0,
    8: 0,
    9: 1,
    10: 1,
    11: 0,
    12: 1,
    13: 2,
    14: 4,
    15: 1,
    16: 1,
}
"""Newest patch release of every emulated 1.x minor version."""

DEFAULT_MINOR = 16

# Snapshot data format written by each release (``--snapshot-version``); before 1.7 the
# format was named after the Firecracker version itself.
_SNAPSHOT_FORMAT: dict[int, str] = {
    6: "1.0.0",
    7: "1.0.0",
    8: "2.0.0",
    9: "3.0.0",
    10: "4.0.0",
    11: "5.0.0",
    12: "6.0.0",
    13: "8.0.0",
    14: "8.0.0",
    15: "9.0.0",
    16: "10.0.0",
}


@dataclass(frozen=True)
class Release:
    """One emulated Firecracker release (always 1.x)."""

    minor: int
    patch: int

    @property
    def version(self) -> str:
        """The version string the release reports (``"1.14.4"``)."""
        return f"1.{self.minor}.{self.patch}"

    def at_least(self, minor: int) -> bool:
        """Whether this release is 1.``minor`` or newer."""
        return self.minor >= minor

    @property
    def modern(self) -> bool:
        """Releases from 1.6 on prefix VMM errors ("Boot source error: ...") and log to stdout."""
        return self.minor >= 6

    @property
    def snapshot_format(self) -> str:
        """The snapshot data format version this release writes."""
        return _SNAPSHOT_FORMAT.get(self.minor, f"1.{self.minor}.0")

    @property
    def supported_snapshot_formats(self) -> list[str]:
        """Formats listed by ``--version`` of releases before 1.6."""
        return ["0.23.0", "0.24.0", "0.25.0"] + [f"1.{m}.0" for m in range(self.minor + 1)]


def parse_release(text: str | None) -> Release:
    """Parse ``"1.14"``, ``"1.14.2"`` or ``"v1.14.2"`` (``None``: env var, then the default).

    Raises:
        ValueError: not a 1.x version the emulator knows.
    """
    if text is None:
        text = os.environ.get(ENV_VAR) or f"1.{DEFAULT_MINOR}"
    raw = text.strip().removeprefix("v")
    parts = raw.split(".")
    known = ", ".join(f"1.{m}" for m in sorted(NEWEST_PATCH))
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts) or parts[0] != "1":
        raise ValueError(f"unsupported Firecracker version {text!r}; the emulator knows {known}")
    minor = int(parts[1])
    if minor not in NEWEST_PATCH:
        raise ValueError(f"unsupported Firecracker version {text!r}; the emulator knows {known}")
    patch = int(parts[2]) if len(parts) == 3 else NEWEST_PATCH[minor]
    return Release(minor, patch)
