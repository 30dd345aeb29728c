"""Where the ``firecracker`` and ``jailer`` executables are: one lookup, in one order.

For each of the two binaries firec takes the first of:

1. the path the caller gave (``Config.firecracker_binary``,
   ``JailerConfig.exec_file`` / ``JailerConfig.jailer_binary``,
   ``firec run --firecracker-bin`` / ``--jailer-bin``);
2. the environment variable (``FIRECRACKER_BIN`` / ``JAILER_BIN``): when it
   is set it alone counts, even if it names no executable (that is then said);
3. ``PATH``;
4. the newest release ``firec install`` put in firec's data directory for
   this machine's architecture (``$XDG_DATA_HOME/firec/bin/<version>/``,
   by default ``~/.local/share/firec/bin/<version>/``).

:func:`find_binary` does steps 2 to 4 and says which one found it;
:func:`resolve_binary` does all four and refuses, naming every way to fix it,
when the binary is nowhere or not executable. :mod:`firec.host.checks`
(``firec doctor``) and :mod:`firec.host.install` (``firec install``) use
these, so the doctor reports exactly the binary a microVM would run.

:func:`remember_version` keeps, for this process, the version a binary's API
answered with, by the file's identity (device, inode, size, mtime): a second
microVM of the same binary then needs no ``GET /`` before its first request
(:func:`remembered_version`); a binary replaced on disk is asked again.

Example::

    >>> from pathlib import Path
    >>> path, how = find_binary("firecracker")
    >>> how in ("$FIRECRACKER_BIN", "PATH", "firec install", "")
    True
    >>> resolve_binary(Path("/bin/sh"), "firecracker")  # an explicit path wins
    PosixPath('/bin/sh')
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from firec.api.versions import Version
from firec.errors import ConfigError, ValidationError

__all__ = [
    "BINARY_ENV",
    "RELEASE_RECORD",
    "InstalledRelease",
    "bin_dir",
    "data_dir",
    "find_binary",
    "installed_releases",
    "normalize_arch",
    "read_release",
    "release_version_key",
    "remember_version",
    "remembered_version",
    "resolve_binary",
]

#: The environment variable that names each binary.
BINARY_ENV = {"firecracker": "FIRECRACKER_BIN", "jailer": "JAILER_BIN"}

#: The file in an installed release's directory that describes it.
RELEASE_RECORD = "release.json"

#: A Firecracker release version: ``v1.14.2``, ``1.14.2``, ``v1.15.0-rc1``.
RELEASE_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.-]+)?$")

_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True)
class InstalledRelease:
    """A Firecracker release installed by firec.

    Attributes:
        version: the release, ``"v1.14.2"``.
        arch: ``"x86_64"`` or ``"aarch64"``.
        directory: where it is installed.
        firecracker: the ``firecracker`` binary.
        jailer: the ``jailer`` binary.
        sha256: SHA-256 of the release archive it came from.
        source: the URL of that archive.
    """

    version: str
    arch: str
    directory: Path
    firecracker: Path
    jailer: Path
    sha256: str
    source: str


def data_dir() -> Path:
    """firec's per-user data directory: ``$XDG_DATA_HOME/firec`` or ``~/.local/share/firec``.

    >>> data_dir().name
    'firec'
    >>> bin_dir() == data_dir() / "bin"
    True
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "firec"


def bin_dir() -> Path:
    """Where ``firec install`` puts releases, one directory per version."""
    return data_dir() / "bin"


def normalize_arch(arch: str | None = None) -> str:
    """Firecracker's name for an architecture (``amd64`` -> ``x86_64``); this host's by default.

    >>> normalize_arch("arm64")
    'aarch64'
    """
    name = arch or platform.machine()
    try:
        return _ARCHES[name.lower()]
    except KeyError:
        raise ValidationError(
            "arch", f"Firecracker is released for x86_64 and aarch64 only, not {name!r}"
        ) from None


def release_version_key(version: str) -> tuple[int, int, int, str]:
    """A sort key of release versions: by number, a pre-release before its release.

    >>> sorted(["v1.10.0", "v1.9.1", "v1.10.0-rc1"], key=release_version_key)
    ['v1.9.1', 'v1.10.0-rc1', 'v1.10.0']
    """
    match = RELEASE_VERSION.match(version)
    if match is None:
        return (0, 0, 0, version)
    return (int(match[1]), int(match[2]), int(match[3]), match[4] or "~")


def read_release(directory: Path) -> InstalledRelease | None:
    """The release installed in ``directory``, or ``None`` if it holds no complete install.

    Complete: its :data:`RELEASE_RECORD` reads, and both binaries are executable.
    """
    try:
        record = json.loads((directory / RELEASE_RECORD).read_text())
        release = InstalledRelease(
            version=str(record["version"]),
            arch=str(record["arch"]),
            directory=directory,
            firecracker=directory / "firecracker",
            jailer=directory / "jailer",
            sha256=str(record["sha256"]),
            source=str(record["source"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if all(os.access(p, os.X_OK) for p in (release.firecracker, release.jailer)):
        return release
    return None


def installed_releases(root: Path | None = None) -> list[InstalledRelease]:
    """The releases installed under ``root`` (default :func:`bin_dir`), newest first.

    Only complete installs count: both binaries present and executable.
    """
    base = root or bin_dir()
    found = []
    with contextlib.suppress(OSError):
        for child in base.iterdir():
            release = read_release(child)
            if release is not None:
                found.append(release)
    return sorted(found, key=lambda r: release_version_key(r.version), reverse=True)


def find_binary(name: str) -> tuple[Path | None, str]:
    """Where ``firecracker`` or ``jailer`` is, and how it was found (steps 2 to 4 above).

    Returns ``(path, how)``: ``how`` is ``"$FIRECRACKER_BIN"``, ``"PATH"`` or
    ``"firec install"``. When the environment variable is set, it alone counts:
    its path is returned even if it is not an executable (the check says so).
    ``(None, "")`` when it is nowhere.

    >>> path, how = find_binary("firecracker")
    >>> how in ("$FIRECRACKER_BIN", "PATH", "firec install", "")
    True
    """
    env = BINARY_ENV[name]
    if os.environ.get(env):
        return Path(os.environ[env]), f"${env}"
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path), "PATH"
    try:
        arch = normalize_arch()
    except ValueError:
        return None, ""
    for release in installed_releases():
        if release.arch == arch:
            return getattr(release, name), "firec install"
    return None, ""


def resolve_binary(explicit: Path | None, name: str) -> Path:
    """``explicit``, else where :func:`find_binary` finds ``name`` (the whole order above).

    Raises:
        ConfigError: it is nowhere (the message names every way to give it),
            or what was found is not an executable file.
    """
    candidate = explicit if explicit is not None else find_binary(name)[0]
    if candidate is None:
        raise ConfigError(
            name,
            f"no {name} binary: pass its path, set {BINARY_ENV[name]}, put {name} on PATH, "
            "or run `firec install`",
        )
    if not os.access(candidate, os.X_OK) or not candidate.is_file():
        raise ConfigError(name, f"{candidate} is not an executable file")
    return candidate


#: The versions binaries answered with in this process, by file identity.
_answered: dict[tuple[str, int, int, int, int], Version] = {}


def _identity(path: Path) -> tuple[str, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember_version(path: Path, version: Version) -> None:
    """Note that the Firecracker binary ``path`` answered with ``version`` (this process only)."""
    identity = _identity(path)
    if identity is not None:
        _answered[identity] = version


def remembered_version(path: Path) -> Version | None:
    """The version the binary ``path``, as it is on disk now, answered with before, if it did.

    >>> from firec.api.versions import Version
    >>> remember_version(Path("/bin/sh"), Version.parse("1.14.2"))
    >>> str(remembered_version(Path("/bin/sh")))
    '1.14.2'
    >>> remembered_version(Path("/nowhere")) is None
    True
    """
    identity = _identity(path)
    return _answered.get(identity) if identity is not None else None
