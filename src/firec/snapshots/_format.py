"""Snapshot data formats: which Firecracker writes which, and which one loads which.

A snapshot's state file carries a *data format version*, separate from the
Firecracker version (Firecracker's ``docs/snapshotting/versioning.md``):

* Firecracker 1.0 to 1.6 (the "versionize" era) name the format after a
  Firecracker release (``v1.0.0``) and load every format from ``v0.23.0`` up
  to their own release (``firecracker --version`` lists them).
* From 1.7 on the format has its own numbering (1.7 writes ``v1.0.0``, 1.14
  ``v8.0.0``, 1.16 ``v10.0.0``: ``firecracker --snapshot-version``), and a
  Firecracker loads a snapshot only when the format's major version equals
  its own and the minor version is not newer. 1.7 and later cannot load a
  snapshot of the versionize era, nor the other way round.

``firecracker --describe-snapshot <state file>`` prints a file's format.
:func:`probe` asks a binary what it is (cached per binary file)::

    >>> from firec.api.versions import Version
    >>> written_by(Version.parse("1.14.2"))
    Version(major=8, minor=0, patch=0)
    >>> can_load(Version.parse("1.13.0"), written_by(Version.parse("1.13.0")),
    ...          Version.parse("1.14.2"))
    True
    >>> can_load(Version.parse("1.0.0"), Version.parse("1.0.0"), Version.parse("1.14.2"))
    False
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from firec.api.versions import Version
from firec.errors import FirecError

__all__ = [
    "FirecrackerBinary",
    "can_load",
    "describe_state_file",
    "incompatibility",
    "probe",
    "written_by",
]

#: The first release of the serde/bincode format era.
SERDE_ERA = Version(1, 7, 0)

# Format written by each release of the serde era; a patch release that changed it
# is listed as (minor, patch). Read from SNAPSHOT_VERSION in Firecracker's sources.
_FORMAT_BY_MINOR: dict[int, Version] = {
    7: Version(1, 0, 0),
    8: Version(2, 0, 0),
    9: Version(3, 0, 0),
    10: Version(3, 0, 0),
    11: Version(5, 0, 0),
    12: Version(6, 0, 0),
    13: Version(8, 0, 0),
    14: Version(8, 0, 0),
    15: Version(9, 0, 0),
    16: Version(10, 0, 0),
}
_FORMAT_BY_PATCH: dict[tuple[int, int], Version] = {(10, 1): Version(4, 0, 0)}

_FIRECRACKER_LINE = re.compile(r"Firecracker v?(\d+\.\d+\.\d+\S*)")
_FORMAT_LINE = re.compile(r"^v?(\d+\.\d+\.\d+)\s*$", re.MULTILINE)


def _legacy(version: Version) -> bool:
    return version < SERDE_ERA


def written_by(version: Version) -> Version:
    """The snapshot data format a Firecracker ``version`` writes (from firec's table).

    Versionize-era releases (before 1.7) write the format named after themselves.
    """
    if _legacy(version):
        return Version(version.major, version.minor, 0)
    exact = _FORMAT_BY_PATCH.get((version.minor, version.patch))
    if exact is not None and version.major == 1:
        return exact
    if version.major == 1 and version.minor in _FORMAT_BY_MINOR:
        return _FORMAT_BY_MINOR[version.minor]
    newest = max(_FORMAT_BY_MINOR)
    return _FORMAT_BY_MINOR[newest]  # a newer release: assume the newest known format


def can_load(
    snapshot_firecracker: Version,
    snapshot_format: Version,
    target: Version,
    target_format: Version | None = None,
) -> bool:
    """Whether Firecracker ``target`` loads a snapshot in ``snapshot_format``
    taken by Firecracker ``snapshot_firecracker``.

    ``target_format`` is the format the target writes (``--snapshot-version``);
    firec's table gives it when not passed.
    """
    return incompatibility(snapshot_firecracker, snapshot_format, target, target_format) is None


def incompatibility(
    snapshot_firecracker: Version,
    snapshot_format: Version,
    target: Version,
    target_format: Version | None = None,
) -> str | None:
    """Why ``target`` cannot load the snapshot (see :func:`can_load`), or ``None`` if it can."""
    if _legacy(snapshot_firecracker) != _legacy(target):
        return (
            "Firecracker 1.7 replaced the snapshot format of 1.0-1.6: no release of one side "
            "loads snapshots of the other"
        )
    if _legacy(target):
        if snapshot_format > Version(target.major, target.minor, 0):
            return (
                f"Firecracker {target} loads snapshot data formats up to "
                f"v{target.major}.{target.minor}.0, not the newer v{snapshot_format}"
            )
        return None
    reads = target_format or written_by(target)
    if snapshot_format.major != reads.major or snapshot_format.minor > reads.minor:
        return (
            f"Firecracker {target} reads snapshot data format v{reads.major}.x "
            f"(up to v{reads.major}.{reads.minor}), not v{snapshot_format}"
        )
    return None


@dataclass(frozen=True)
class FirecrackerBinary:
    """What a Firecracker executable said about itself.

    Attributes:
        path: the executable.
        version: its release (``--version``).
        snapshot_format: the snapshot data format it writes (``--snapshot-version``
            from 1.7 on; the release itself before).
    """

    path: Path
    version: Version
    snapshot_format: Version


_PROBED: dict[tuple[str, int, int, int], FirecrackerBinary] = {}


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirecError(f"cannot run {argv[0]}: {exc}") from exc


def probe(binary: str | os.PathLike[str]) -> FirecrackerBinary:
    """Ask a Firecracker executable its version and snapshot format (cached per file).

    Raises:
        FirecError: the executable cannot be run or does not say its version.
    """
    path = Path(binary)
    try:
        stat = path.stat()
    except OSError as exc:
        raise FirecError(f"cannot run {path}: {exc.strerror}") from exc
    key = (os.fspath(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    known = _PROBED.get(key)
    if known is not None:
        return known
    answer = _run([os.fspath(path), "--version"])
    match = _FIRECRACKER_LINE.search(answer.stdout)
    if answer.returncode != 0 or match is None:
        said = (answer.stdout + answer.stderr).strip()[:200]
        raise FirecError(
            f"{path} --version did not say its version (exit {answer.returncode}): {said}"
        )
    version = Version.parse(match[1])
    snapshot_format = written_by(version)
    if not _legacy(version):
        answer = _run([os.fspath(path), "--snapshot-version"])
        found = _FORMAT_LINE.search(answer.stdout)
        if answer.returncode == 0 and found is not None:
            snapshot_format = Version.parse(found[1])
    info = FirecrackerBinary(path, version, snapshot_format)
    _PROBED[key] = info
    return info


def describe_state_file(
    binary: str | os.PathLike[str], state_file: str | os.PathLike[str]
) -> Version | None:
    """The data format of a snapshot state file, as ``binary --describe-snapshot`` prints it.

    ``None`` when the binary cannot tell (then use :func:`written_by`).
    """
    try:
        answer = _run([os.fspath(binary), "--describe-snapshot", os.fspath(state_file)])
    except FirecError:
        return None
    found = _FORMAT_LINE.search(answer.stdout)
    if answer.returncode != 0 or found is None:
        return None
    return Version.parse(found[1])
