"""Install an official Firecracker release into firec's data directory.

:func:`install_firecracker` downloads the release tarball for this machine's
architecture from the Firecracker project's GitHub releases::

    https://github.com/firecracker-microvm/firecracker/releases/download/
        v1.14.2/firecracker-v1.14.2-x86_64.tgz            the release
        v1.14.2/firecracker-v1.14.2-x86_64.tgz.sha256.txt  its SHA-256

checks the archive's SHA-256, and puts ``firecracker`` and ``jailer`` in
``$XDG_DATA_HOME/firec/bin/<version>/`` (``~/.local/share/firec/bin/<version>/``).

**What the checksum proves.** firec carries no table of release checksums of
its own: unless the caller pins one (``sha256=``), the archive is checked
against the ``.sha256.txt`` the release publishes next to it. That catches a
truncated or corrupted download and a wrong file, not a compromised release
host. Pin the checksum (``sha256=``, ``firec install --sha256``) to protect
against that too.

The install is atomic: files are prepared in a temporary directory beside the
destination and renamed into place, so a failed or refused install leaves
nothing behind, and an existing install is only replaced by a complete one.

Where releases are installed and how firec finds them again (the data
directory, :func:`installed_releases`, :func:`normalize_arch`) is
:mod:`firec.vm.binaries`, which owns the lookup of both binaries; those names
are importable from here too.

Example::

    >>> from firec.host.install import install_firecracker
    >>> release = install_firecracker()  # doctest: +SKIP
    >>> release.firecracker  # doctest: +SKIP
    PosixPath('/home/me/.local/share/firec/bin/v1.14.2/firecracker')
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx

from firec.errors import FirecError, ValidationError
from firec.host._download import (
    Hints,
    check_replaceable,
    download,
    read_small,
    replace_dir,
    staging_dir,
    verify_sha256,
)
from firec.host._download import client as download_client
from firec.vm.binaries import (
    RELEASE_RECORD,
    RELEASE_VERSION,
    InstalledRelease,
    bin_dir,
    data_dir,
    installed_releases,
    normalize_arch,
    read_release,
)

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "GITHUB_RELEASES",
    "PINNED_VERSION",
    "InstalledRelease",
    "bin_dir",
    "data_dir",
    "install_firecracker",
    "installed_releases",
    "normalize_arch",
]

#: The Firecracker release ``firec install`` installs by default.
PINNED_VERSION = "v1.14.2"
#: Where the official release assets live (``<base>/<version>/<asset>``).
GITHUB_RELEASES = "https://github.com/firecracker-microvm/firecracker/releases/download"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_ARCHIVE = 1 << 30


def _normalize_version(version: str) -> str:
    match = RELEASE_VERSION.match(version.strip())
    if match is None:
        raise ValidationError("version", f"{version!r} is not a release version like 'v1.14.2'")
    return "v" + version.strip().lstrip("v")


def install_firecracker(
    version: str = PINNED_VERSION,
    *,
    arch: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    base_url: str = GITHUB_RELEASES,
    progress: Progress | None = None,
    sha256: str | None = None,
) -> InstalledRelease:
    """Download, verify and install a Firecracker release; return what was installed.

    Args:
        version: the release (``"v1.14.2"`` or ``"1.14.2"``); :data:`PINNED_VERSION` by default.
        arch: ``"x86_64"``/``"aarch64"`` (or ``amd64``/``arm64``); this host's by default.
        dest: the directory to install into; ``<bin_dir()>/<version>`` by default.
        base_url: where releases are served, laid out like GitHub's release downloads.
        progress: a :class:`rich.progress.Progress` to show the download on.
        sha256: the archive's expected SHA-256. Without it, the checksum the
            release publishes (``<archive>.sha256.txt``) is used.

    Returns:
        The installed release. If ``dest`` already holds a complete install of
        this version and architecture (matching ``sha256``, when given), it is
        returned as is, without any download.

    Raises:
        ValidationError: a malformed ``version``, ``arch`` or ``sha256``.
        FirecError: the release host cannot be reached (offline), the release
            does not exist, the checksum does not match (nothing is installed),
            or the archive lacks the binaries.

    Example::

        >>> from rich.progress import Progress
        >>> with Progress() as bar:  # doctest: +SKIP
        ...     release = install_firecracker("v1.14.2", progress=bar)
        >>> release.version  # doctest: +SKIP
        'v1.14.2'
    """
    version = _normalize_version(version)
    arch = normalize_arch(arch)
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise ValidationError("sha256", f"{sha256!r} is not a SHA-256 (64 hex digits)")
    target = Path(dest) if dest is not None else bin_dir() / version
    existing = read_release(target)
    if (
        existing is not None
        and (existing.version, existing.arch) == (version, arch)
        and (sha256 is None or existing.sha256 == sha256.lower())
    ):
        return existing

    check_replaceable(
        target,
        lambda n: n in ("firecracker", "jailer", RELEASE_RECORD),
        "is not a firec install of Firecracker; give a new or empty directory to install into",
    )
    name = f"firecracker-{version}-{arch}.tgz"
    archive_url = f"{base_url.rstrip('/')}/{version}/{name}"
    staging = staging_dir(target)
    try:
        with download_client() as client:
            expected = sha256.lower() if sha256 else _published_sha256(client, archive_url, name)
            archive = staging / name
            label = f"firecracker {version}"
            actual = download(
                client,
                archive_url,
                archive,
                progress,
                label,
                limit=_MAX_ARCHIVE,
                hints=_HINTS,
                what="a Firecracker release",
            )
        verify_sha256(archive_url, expected, actual, "Nothing was installed.")
        _extract_binaries(archive, staging, version, arch, archive_url)
        archive.unlink()
        record = {"version": version, "arch": arch, "sha256": actual, "source": archive_url}
        (staging / RELEASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    release = read_release(target)
    assert release is not None
    return release


_HINTS = Hints(
    not_found="; is there such a Firecracker release for this architecture? See "
    "https://github.com/firecracker-microvm/firecracker/releases",
    offline="(offline?) — set FIRECRACKER_BIN (and JAILER_BIN) to Firecracker binaries you "
    "already have, or run `firec install` again when online",
)


def _published_sha256(client: httpx.Client, archive_url: str, name: str) -> str:
    url = archive_url + ".sha256.txt"
    data = read_small(client, url, _HINTS, limit=64 << 10)
    text = data.decode("utf-8", "replace")
    fields = text.split()
    if not fields or not _SHA256.match(fields[0].lower()):
        raise FirecError(f"{url}: not a SHA-256 checksum file (it starts {text[:60]!r})")
    if len(fields) > 1 and Path(fields[1].lstrip("*")).name != name:
        raise FirecError(f"{url}: the checksum is for {fields[1]!r}, not {name!r}")
    return fields[0].lower()


def _extract_binaries(archive: Path, staging: Path, version: str, arch: str, url: str) -> None:
    wanted = {f"firecracker-{version}-{arch}": "firecracker", f"jailer-{version}-{arch}": "jailer"}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                installed = wanted.get(Path(member.name).name)
                if installed is None or not member.isfile():
                    continue
                src: IO[bytes] | None = tar.extractfile(member)
                assert src is not None
                with src, (staging / installed).open("wb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(staging / installed, 0o755)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise FirecError(f"cannot unpack {url} into {staging}: {exc.strerror}") from exc
        raise FirecError(f"{url}: not a valid release archive: {exc}") from exc
    missing = [name for name, installed in wanted.items() if not (staging / installed).exists()]
    if missing:
        raise FirecError(f"{url}: the archive lacks {', '.join(missing)}")
