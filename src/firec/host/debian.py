"""The Debian archive, read the way apt reads it: a signed Release, then a Packages index.

``firec kernel fetch`` finds Debian's cloud kernel here. The chain of trust:

1. ``dists/<suite>/InRelease`` is the suite's Release file, clear-signed by
   Debian's archive keys. :func:`read_release` checks the signature with
   ``gpgv`` against a keyring on this host (``/usr/share/keyrings/
   debian-archive-keyring.gpg``, from the ``debian-archive-keyring`` package,
   which apt itself needs), accepts it when at least one signature is good and
   none is bad, and reads only the text that was signed (``gpgv --output``).
   It also checks that the file is the suite asked for (``Suite`` or
   ``Codename``) and, when it says one, that its ``Valid-Until`` has not passed.
2. The Release lists the SHA-256 of each index: ``main/binary-amd64/Packages.xz``
   is downloaded and checked against it.
3. The Packages index gives each package's file (``Filename``) and SHA-256;
   the ``.deb`` is checked against that.

Without ``gpgv`` or the keyring there is no step 1: :func:`read_release`
refuses, unless asked to read the index unverified (``verify=False``), in
which case the only protection is the HTTPS connection to the mirror.

Example::

    >>> from firec.host import debian
    >>> with debian.client() as http:  # doctest: +SKIP
    ...     release = debian.read_release(http, debian.DEBIAN_MIRROR, "bookworm")
    ...     index = debian.read_packages(http, release, "main", "amd64", None,
    ...                                  lambda name: name.startswith("linux-image-"))
    >>> debian.kernel_package(index, "linux-image-cloud-amd64").name  # doctest: +SKIP
    'linux-image-6.1.0-28-cloud-amd64'
"""

from __future__ import annotations

import contextlib
import functools
import lzma
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from firec.errors import FirecError
from firec.host._download import Hints, client, download, read_small, verify_sha256

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "DEBIAN_KEYRING",
    "DEBIAN_MIRROR",
    "Package",
    "Release",
    "client",
    "compare_versions",
    "kernel_package",
    "parse_stanzas",
    "read_packages",
    "read_release",
]

#: The Debian archive's own redirector to a nearby mirror.
DEBIAN_MIRROR = "https://deb.debian.org/debian"
#: Debian's archive signing keys, as the ``debian-archive-keyring`` package installs them.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_RELEASE = 4 << 20
_MAX_INDEX = 256 << 20
_HINTS = Hints(
    not_found="; check the mirror URL and the suite name (bookworm, trixie...)",
    offline="(offline?) — `firec kernel fetch` needs to reach the Debian archive; "
    "or give a kernel you already have to firec run",
)


@dataclass(frozen=True)
class Release:
    """A suite's Release file, as read and (when ``signed``) verified.

    Attributes:
        url: where the InRelease came from.
        mirror: the archive's base URL.
        suite: the suite asked for.
        fields: its header fields (``Codename``, ``Date``...).
        sha256: each index's path (``main/binary-amd64/Packages.xz``) -> (sha256, size).
        signed: whether a good signature from ``keyring`` was checked.
        keyring: the keyring the signature was checked against.
    """

    url: str
    mirror: str
    suite: str
    fields: dict[str, str]
    sha256: dict[str, tuple[str, int]]
    signed: bool
    keyring: Path | None = None


@dataclass(frozen=True)
class Package:
    """One stanza of a Packages index (the fields firec uses)."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    depends: str = ""
    fields: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


def read_release(
    http: httpx.Client,
    mirror: str,
    suite: str,
    *,
    verify: bool = True,
    keyring: Path | None = None,
) -> Release:
    """Download ``dists/<suite>/InRelease`` and check its signature (unless ``verify=False``).

    Raises:
        FirecError: the file cannot be had, ``gpgv`` or the keyring is missing
            (the message says how to get them, or to pass ``verify=False``), the
            signature is bad or made by no key of the keyring, or the file is
            for another suite or out of date.
    """
    base = mirror.rstrip("/")
    url = f"{base}/dists/{suite}/InRelease"
    data = read_small(http, url, _HINTS, limit=_MAX_RELEASE)
    ring = keyring if keyring is not None else DEBIAN_KEYRING
    text = _verified_text(data, url, ring) if verify else _unsigned_text(data)
    header, sums = _parse_release(text, url)
    if suite not in (header.get("Suite"), header.get("Codename")):
        raise FirecError(
            f"{url} is the Release of {header.get('Suite')!r} ({header.get('Codename')!r}), "
            f"not of {suite!r}: the mirror serves the wrong file"
        )
    until = header.get("Valid-Until")
    if until is not None:
        with contextlib.suppress(TypeError, ValueError):
            if parsedate_to_datetime(until) < datetime.now(UTC):
                raise FirecError(
                    f"{url} expired on {until} (Valid-Until): the mirror is out of date"
                )
    return Release(url, base, suite, header, sums, verify, ring if verify else None)


def _verified_text(data: bytes, url: str, keyring: Path) -> str:
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise FirecError(
            f"cannot check the signature of {url}: gpgv is not installed (Debian/Ubuntu: "
            "apt-get install gpgv); or read the index unverified (--no-verify-index), "
            "trusting only the HTTPS connection to the mirror"
        )
    if not keyring.is_file():
        raise FirecError(
            f"cannot check the signature of {url}: no keyring at {keyring} (Debian/Ubuntu: "
            "apt-get install debian-archive-keyring; or give --keyring PATH); or read the "
            "index unverified (--no-verify-index), trusting only the HTTPS connection"
        )
    with tempfile.TemporaryDirectory(prefix="firec-release-") as work:
        signed, plain = Path(work) / "InRelease", Path(work) / "Release"
        signed.write_bytes(data)
        proc = subprocess.run(
            [
                gpgv,
                "--status-fd",
                "2",
                "--keyring",
                str(keyring),
                "--output",
                str(plain),
                str(signed),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        status = [
            line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("[GNUPG:]")
        ]
        kinds = [words[0] for words in status if words]
        bad = [k for k in kinds if k in ("BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG")]
        if "VALIDSIG" not in kinds or bad or not plain.exists():
            said = [line for line in proc.stderr.splitlines() if not line.startswith("[GNUPG:]")]
            why = "; ".join(said[-3:]) or "no signature"
            raise FirecError(
                f"{url}: no good signature by a key of {keyring} ({why}); the index cannot be "
                "trusted, nothing was downloaded from it"
            )
        return plain.read_text("utf-8", "replace")


def _unsigned_text(data: bytes) -> str:
    """The body of a clear-signed file, unchecked (or the file, when it is not signed)."""
    text = data.decode("utf-8", "replace")
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    _, _, rest = text.partition("\n\n")  # after the armor headers
    body, _, _ = rest.partition("\n-----BEGIN PGP SIGNATURE-----")
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body.splitlines())


def _parse_release(text: str, url: str) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    stanzas = list(parse_stanzas(text.splitlines()))
    if not stanzas:
        raise FirecError(f"{url}: an empty Release file")
    header = stanzas[0]
    sums: dict[str, tuple[str, int]] = {}
    for line in header.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and _SHA256.match(parts[0]) and parts[1].isdigit():
            sums[parts[2]] = (parts[0], int(parts[1]))
    if not sums:
        raise FirecError(f"{url}: the Release lists no SHA256 checksums")
    return header, sums


def parse_stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The stanzas of a Debian control file (Release, Packages) as dicts of fields.

    A field's continuation lines are kept, joined with newlines, without their
    leading space.

    Example::

        >>> list(parse_stanzas(["Package: a", "Depends: b", "", "Package: c", "SHA256:", " x 1 y"]))
        [{'Package': 'a', 'Depends': 'b'}, {'Package': 'c', 'SHA256': 'x 1 y'}]
    """
    stanza: dict[str, str] = {}
    last: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                value = line[1:]
                stanza[last] = f"{stanza[last]}\n{value}" if stanza[last] else value
        else:
            name, _, value = line.partition(":")
            last = name.strip()
            stanza[last] = value.strip()
    if stanza:
        yield stanza


def read_packages(
    http: httpx.Client,
    release: Release,
    component: str,
    arch: str,
    progress: Progress | None,
    keep: Callable[[str], bool],
) -> dict[str, list[Package]]:
    """Download ``<component>/binary-<arch>/Packages.xz`` (or ``.gz``), checked against ``release``.

    Returns the stanzas of the packages whose names ``keep`` picks, by name
    (several versions of a package can be listed).
    """
    openers = {".xz": _open_xz, ".gz": _open_gz}
    paths = [f"{component}/binary-{arch}/Packages{suffix}" for suffix in openers]
    path = next((p for p in paths if p in release.sha256), "")
    if not path:
        raise FirecError(
            f"{release.url} lists no {component}/binary-{arch}/Packages.xz or .gz index: "
            "is there such a component and architecture?"
        )
    expected, size = release.sha256[path]
    url = f"{release.mirror}/dists/{release.suite}/{path}"
    found: dict[str, list[Package]] = {}
    with tempfile.TemporaryDirectory(prefix="firec-packages-") as work:
        local = Path(work) / Path(path).name
        actual = download(
            http,
            url,
            local,
            progress,
            f"Debian {release.suite} index",
            limit=min(_MAX_INDEX, size + 1),
            hints=_HINTS,
            what="a package index",
        )
        verify_sha256(url, expected, actual, f"It does not match {release.url}.")
        try:
            with openers[Path(path).suffix](local) as lines:
                for stanza in parse_stanzas(lines):
                    package = _package(stanza)
                    if package is not None and keep(package.name):
                        found.setdefault(package.name, []).append(package)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, UnicodeDecodeError) as exc:
            raise FirecError(f"{url}: cannot read the index: {exc}") from exc
    return found


@contextlib.contextmanager
def _open_xz(path: Path) -> Iterator[Iterator[str]]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        yield iter(f)


@contextlib.contextmanager
def _open_gz(path: Path) -> Iterator[Iterator[str]]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        yield iter(f)


def _package(stanza: dict[str, str]) -> Package | None:
    try:
        sha256, size = stanza["SHA256"].strip(), int(stanza["Size"])
        return Package(
            stanza["Package"],
            stanza["Version"],
            stanza["Filename"],
            sha256,
            size,
            stanza.get("Depends", ""),
            stanza,
        )
    except (KeyError, ValueError):
        return None


def kernel_package(index: dict[str, list[Package]], meta: str) -> Package:
    """The kernel package the meta-package ``meta`` depends on, at the version it asks for.

    Raises:
        FirecError: ``meta`` is not in the index, depends on no ``linux-image-*``
            package, or that package (at that version) is not listed.
    """
    metas = index.get(meta)
    if not metas:
        raise FirecError(f"the index lists no {meta}: is this a Debian suite with that kernel?")
    chosen = _newest(metas)
    for alternative in re.split(r"[,|]", chosen.depends):
        match = re.match(r"\s*(linux-image-\S+)(?:\s*\(\s*=\s*([^)\s]+)\s*\))?", alternative)
        if match is None:
            continue
        name, version = match[1], match[2]
        candidates = [p for p in index.get(name, []) if version is None or p.version == version]
        if candidates:
            package = _newest(candidates)
            if not _SHA256.match(package.sha256):
                raise FirecError(f"the index gives {package.name} no valid SHA256")
            return package
        wanted = f"{name} (= {version})" if version else name
        raise FirecError(f"{meta} {chosen.version} depends on {wanted}, which the index lacks")
    raise FirecError(f"{meta} {chosen.version} depends on no linux-image package: {chosen.depends}")


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian versions as dpkg does: negative, zero or positive.

    Example::

        >>> compare_versions("6.1.119-1", "6.1.99-1") > 0, compare_versions("1.0~rc1", "1.0") < 0
        (True, True)
    """
    ka, kb = _version_key(a), _version_key(b)
    if ka[0] != kb[0]:
        return -1 if ka[0] < kb[0] else 1
    for x, y in ((ka[1], kb[1]), (ka[2], kb[2])):
        result = _compare_parts(x, y)
        if result:
            return result
    return 0


_Parts = tuple[tuple[tuple[int, ...], int], ...]


def _newest(packages: list[Package]) -> Package:
    def order(x: Package, y: Package) -> int:
        return compare_versions(x.version, y.version)

    return max(packages, key=functools.cmp_to_key(order))


def _order(c: str) -> int:
    """dpkg's order of version characters: ``~`` before the end, letters, then the rest."""
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _parts(part: str) -> _Parts:
    """``part`` as (non-digits, number) pairs, the non-digits ending in 0 (the end of string)."""
    return tuple(
        ((*(_order(c) for c in letters), 0), int(digits or 0))
        for letters, digits in re.findall(r"(\D*)(\d*)", part)
        if letters or digits
    )


def _version_key(version: str) -> tuple[int, _Parts, _Parts]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch) if epoch.isdigit() else 0, _parts(upstream), _parts(revision)


def _compare_parts(a: _Parts, b: _Parts) -> int:
    empty: tuple[tuple[int, ...], int] = ((0,), 0)
    for i in range(max(len(a), len(b))):
        (la, na), (lb, nb) = (a[i] if i < len(a) else empty), (b[i] if i < len(b) else empty)
        width = max(len(la), len(lb))
        la, lb = la + (0,) * (width - len(la)), lb + (0,) * (width - len(lb))
        if la != lb:
            return -1 if la < lb else 1
        if na != nb:
            return -1 if na < nb else 1
    return 0
