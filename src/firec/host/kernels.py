"""Fetch a guest kernel Firecracker boots: ``firec kernel fetch``.

Two sources:

* **Debian's cloud kernel** (the default): the package ``linux-image-cloud-amd64``
  depends on, from the Debian archive (suite ``bookworm`` by default: Linux
  6.1, a guest kernel version Firecracker supports). The package is found
  through the suite's signed Release and its Packages index, checked against
  the SHA-256 the index gives (see :mod:`firec.host.debian` for how far that
  trust goes), unpacked in Python, and its ``/boot/vmlinuz-*`` turned into the
  ELF ``vmlinux`` Firecracker loads (:func:`firec.images.extract_vmlinux`). Its
  ``/boot/config-*`` is kept beside it, for ``firec doctor --kernel``.
* **Any URL** with the SHA-256 you expect (``url=``, ``sha256=``): a vmlinux, a
  bzImage, or a Debian kernel package, e.g. one of Firecracker's CI kernels.

The kernel goes to ``<data dir>/kernels/<name>/`` (``$XDG_DATA_HOME/firec/kernels``,
by default ``~/.local/share/firec/kernels``; :func:`kernels_dir`) or to ``dest``:
``vmlinux``, the ``config-*`` when there is one, and ``kernel.json`` saying where
it came from. The directory appears whole or not at all; a kernel already
there with the same checksum is reused without a download.

Example::

    >>> from firec.host.kernels import fetch_kernel
    >>> kernel = fetch_kernel()  # doctest: +SKIP
    >>> kernel.vmlinux, kernel.config  # doctest: +SKIP
    (PosixPath('/root/.local/share/firec/kernels/linux-image-6.1.0-28-cloud-amd64/vmlinux'),
     PosixPath('/root/.local/share/firec/kernels/linux-image-6.1.0-28-cloud-amd64/config-6.1.0-28-cloud-amd64'))
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firec.errors import FirecError, ValidationError
from firec.host import debian
from firec.host._download import (
    Hints,
    check_replaceable,
    client,
    download,
    replace_dir,
    staging_dir,
    verify_sha256,
)
from firec.images.deb import extract_deb_files
from firec.images.kernel import extract_vmlinux
from firec.vm.binaries import data_dir

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "DEFAULT_SUITE",
    "KERNEL_META",
    "KERNEL_RECORD",
    "FetchedKernel",
    "fetch_kernel",
    "kernels_dir",
    "read_kernel",
]

#: The Debian meta-package whose kernel ``firec kernel fetch`` takes.
KERNEL_META = "linux-image-cloud-amd64"
#: The Debian suite it is taken from (Linux 6.1).
DEFAULT_SUITE = "bookworm"
#: The record written beside each fetched kernel.
KERNEL_RECORD = "kernel.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_KERNEL = 1 << 30
_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
_URL_HINTS = Hints(
    not_found="; check the URL", offline="(offline?) — give a kernel file you already have"
)


@dataclass(frozen=True)
class FetchedKernel:
    """A kernel :func:`fetch_kernel` put on disk.

    Attributes:
        directory: where its files are.
        vmlinux: the ELF kernel to give Firecracker.
        config: its build configuration (``config-*``), when the source had one.
        source: the URL it was downloaded from.
        sha256: the SHA-256 of what was downloaded (the package or file).
        package: the Debian package and version (``"linux-image-6.1.0-28-cloud-amd64
            6.1.119-1"``), or ``None`` for a URL.
        index: the Release file the package was found through, or ``None``.
        index_signed: whether that Release's signature was checked.
    """

    directory: Path
    vmlinux: Path
    config: Path | None
    source: str
    sha256: str
    package: str | None = None
    index: str | None = None
    index_signed: bool | None = None


def kernels_dir() -> Path:
    """Where fetched kernels go by default: ``<data dir>/kernels``.

    Example::

        >>> kernels_dir().name
        'kernels'
    """
    return data_dir() / "kernels"


def read_kernel(directory: str | os.PathLike[str]) -> FetchedKernel | None:
    """The kernel fetched into ``directory``, or ``None`` when it holds no whole one.

    Example::

        >>> read_kernel("/nonexistent") is None
        True
    """
    where = Path(directory)
    try:
        record = json.loads((where / KERNEL_RECORD).read_text())
        vmlinux = where / str(record["vmlinux"])
        config = where / str(record["config"]) if record.get("config") else None
        kernel = FetchedKernel(
            where,
            vmlinux,
            config,
            str(record["source"]),
            str(record["sha256"]),
            record.get("package"),
            record.get("index"),
            record.get("index_signed"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not vmlinux.is_file() or (config is not None and not config.is_file()):
        return None
    return kernel


def fetch_kernel(
    *,
    url: str | None = None,
    sha256: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    suite: str = DEFAULT_SUITE,
    mirror: str = debian.DEBIAN_MIRROR,
    package: str = KERNEL_META,
    verify_index: bool = True,
    keyring: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> FetchedKernel:
    """Download, check and unpack a guest kernel; return where it is.

    Args:
        url: a kernel to download instead of Debian's (a vmlinux, a bzImage or
            a Debian kernel package); needs ``sha256``.
        sha256: the SHA-256 of what ``url`` serves.
        dest: the directory to put the kernel in (default: under :func:`kernels_dir`).
        suite: the Debian suite (``bookworm``, ``trixie``...).
        mirror: the Debian archive's base URL.
        package: the Debian meta-package whose kernel to take.
        verify_index: check the Release file's signature with ``gpgv``
            (see :mod:`firec.host.debian`); ``False`` trusts the mirror's HTTPS alone.
        keyring: the keyring to check it against (default: Debian's).
        progress: a :class:`rich.progress.Progress` to show the downloads on.

    Raises:
        ValidationError: ``url`` without ``sha256``, or a malformed ``sha256``.
        FirecError: the archive or URL cannot be reached, the index cannot be
            trusted, a checksum does not match, or the download holds no kernel
            Firecracker can boot. Nothing is left behind.
    """
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise ValidationError("sha256", f"{sha256!r} is not a SHA-256 (64 hex digits)")
    if url is not None and sha256 is None:
        raise ValidationError(
            "sha256", f"give the SHA-256 of {url} (--sha256 HEX): a kernel is never taken unchecked"
        )
    if url is None and sha256 is not None:
        raise ValidationError("sha256", "--sha256 goes with --url; Debian's index gives its own")
    with client() as http:
        if url is not None:
            assert sha256 is not None
            name = _NAME.sub("-", Path(url.split("?")[0]).name).strip("-.") or "kernel"
            target = Path(dest) if dest is not None else kernels_dir() / name
            return _fetch(http, url, sha256.lower(), target, progress, name, {})
        arch = os.uname().machine
        if arch not in ("x86_64", "amd64"):
            raise FirecError(
                f"Debian's cloud kernel as a vmlinux is for x86-64 hosts, this one is {arch}; "
                "give a kernel for it with --url URL --sha256 HEX"
            )
        release = debian.read_release(
            http,
            mirror,
            suite,
            verify=verify_index,
            keyring=Path(keyring) if keyring is not None else None,
        )
        index = debian.read_packages(
            http, release, "main", "amd64", progress, lambda n: n.startswith("linux-image-")
        )
        chosen = debian.kernel_package(index, package)
        target = Path(dest) if dest is not None else kernels_dir() / chosen.name
        facts = {
            "package": f"{chosen.name} {chosen.version}",
            "index": release.url,
            "index_signed": release.signed,
        }
        deb_url = f"{release.mirror}/{chosen.filename}"
        return _fetch(http, deb_url, chosen.sha256, target, progress, chosen.name, facts)


def _fetch(
    http: Any,
    url: str,
    sha256: str,
    target: Path,
    progress: Progress | None,
    label: str,
    facts: dict[str, Any],
) -> FetchedKernel:
    existing = read_kernel(target)
    if existing is not None and existing.sha256 == sha256:
        return existing
    check_replaceable(
        target,
        lambda n: n in ("vmlinux", KERNEL_RECORD) or n.startswith("config-"),
        "is not a kernel firec fetched; give a new or empty directory (--dest)",
    )
    staging = staging_dir(target)
    try:
        download_path = staging / "download"
        actual = download(
            http,
            url,
            download_path,
            progress,
            label,
            limit=_MAX_KERNEL,
            hints=_URL_HINTS,
            what="a kernel",
        )
        verify_sha256(url, sha256, actual, "Nothing was kept.")
        config = _unpack(download_path, staging, url)
        download_path.unlink()
        record = {
            "vmlinux": "vmlinux",
            "config": config.name if config is not None else None,
            "source": url,
            "sha256": actual,
            **facts,
        }
        (staging / KERNEL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(staging, 0o755)  # readable like any kernel (a jailed VMM gets a copy)
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kernel = read_kernel(target)
    assert kernel is not None
    return kernel


def _unpack(download_path: Path, staging: Path, url: str) -> Path | None:
    """The vmlinux of the download into ``staging``; return the config kept, if any."""
    with download_path.open("rb") as f:
        head = f.read(8)
    if head != b"!<arch>\n":  # a kernel image itself: ELF or bzImage
        extract_vmlinux(download_path, staging / "vmlinux")
        return None
    unpacked = staging / "package"
    unpacked.mkdir()
    found = extract_deb_files(
        download_path,
        lambda name: re.fullmatch(r"boot/(vmlinuz|config)-[^/]+", name) is not None,
        unpacked,
    )
    images = [p for n, p in found.items() if n.startswith("boot/vmlinuz-")]
    configs = [p for n, p in found.items() if n.startswith("boot/config-")]
    if len(images) != 1:
        raise FirecError(
            f"{url}: a Debian package with {len(images) or 'no'} /boot/vmlinuz-* file(s); "
            "expected one kernel"
        )
    extract_vmlinux(images[0], staging / "vmlinux")
    config = None
    if configs:
        config = staging / configs[0].name
        configs[0].rename(config)
    shutil.rmtree(unpacked)
    return config
