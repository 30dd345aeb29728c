"""Downloads for ``firec install`` and ``firec kernel fetch``: streamed, hashed, bounded.

One copy of the plumbing both commands share: an HTTP client, a request
that turns every transport failure into a :class:`~firec.errors.FirecError`
naming the URL and what to do, a streamed download that computes the file's
SHA-256 while it writes and advances a :class:`rich.progress.Progress`, and
small reads (checksum files, package indexes) with a size cap.

Example::

    >>> from firec.host._download import client, download
    >>> with client() as http:  # doctest: +SKIP
    ...     sha256 = download(http, "https://example.org/f", Path("f"), None, "f",
    ...                       limit=1 << 20, hints=Hints())
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from firec.errors import FirecError

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "Hints",
    "client",
    "download",
    "read_small",
    "replace_dir",
    "request",
    "verify_sha256",
]


@dataclass(frozen=True)
class Hints:
    """What to tell the user when a download fails, per kind of failure.

    Attributes:
        not_found: added to an HTTP 404 (what might not exist, where to look).
        offline: added when the host cannot be reached (what to do offline).
    """

    not_found: str = ""
    offline: str = "(offline?)"


def client() -> httpx.Client:
    """An HTTP client for downloads: redirects followed, generous time-outs."""
    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60, connect=15))


@contextlib.contextmanager
def request(http: httpx.Client, url: str, hints: Hints) -> Iterator[httpx.Response]:
    """GET ``url`` as a stream; every failure is a :class:`FirecError` naming ``url``."""
    host = httpx.URL(url).host
    try:
        with http.stream("GET", url) as response:
            if response.status_code == 404:
                raise FirecError(f"{url}: not found (HTTP 404){hints.not_found}")
            if response.status_code >= 400:
                raise FirecError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
            yield response
    except httpx.ConnectError as exc:
        raise FirecError(f"cannot reach {host}: {exc} {hints.offline}") from exc
    except httpx.TimeoutException as exc:
        raise FirecError(f"{host} did not answer in time while fetching {url}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise FirecError(f"downloading {url} failed: {exc}") from exc


def read_small(http: httpx.Client, url: str, hints: Hints, *, limit: int) -> bytes:
    """The whole body of ``url``, refused past ``limit`` bytes."""
    data = bytearray()
    with request(http, url, hints) as response:
        for chunk in response.iter_bytes(1 << 16):
            data += chunk
            if len(data) > limit:
                raise FirecError(f"{url}: larger than {limit} bytes; refusing")
    return bytes(data)


def download(
    http: httpx.Client,
    url: str,
    path: Path,
    progress: Progress | None,
    label: str,
    *,
    limit: int,
    hints: Hints,
    what: str = "file",
) -> str:
    """Stream ``url`` into ``path``; return the SHA-256 (hex) of what was written.

    Args:
        http: the client (:func:`client`).
        url: what to download.
        path: where to write it (created or truncated).
        progress: a bar to advance, with a task named ``label``; or ``None``.
        label: the progress task's description.
        limit: the most bytes accepted, announced or received.
        hints: what to add to a 404 or a connection error.
        what: what the file is, for the size error ("a Firecracker release").
    """
    digest = hashlib.sha256()
    with request(http, url, hints) as response, path.open("wb") as out:
        total = int(response.headers.get("content-length", 0)) or None
        if total is not None and total > limit:
            raise FirecError(f"{url}: {total} bytes is too large for {what}")
        task = progress.add_task(label, total=total) if progress is not None else None
        size = 0
        for chunk in response.iter_bytes(1 << 16):
            size += len(chunk)
            if size > limit:
                raise FirecError(f"{url}: more than {limit} bytes; refusing")
            digest.update(chunk)
            out.write(chunk)
            if progress is not None and task is not None:
                progress.update(task, advance=len(chunk))
    return digest.hexdigest()


def verify_sha256(url: str, expected: str, actual: str, consequence: str) -> None:
    """Raise a :class:`FirecError` when ``actual`` is not ``expected``, saying ``consequence``."""
    if actual != expected:
        raise FirecError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
            f"the download is corrupt or not the file expected. {consequence}"
        )


def replace_dir(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing what is there only once all is ready."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(target: Path, ours: Callable[[str], bool], refusal: str) -> None:
    """Refuse to write over ``target`` unless it is missing, or a directory of files ``ours`` names.

    Raises:
        FirecError: ``refusal`` (it exists and is something else), or it cannot be read.
    """
    if not target.exists() and not target.is_symlink():
        return
    try:
        names = {p.name for p in target.iterdir()} if target.is_dir() else None
    except OSError as exc:
        raise FirecError(f"cannot read {target}: {exc.strerror or exc}") from exc
    if target.is_symlink() or names is None or not all(ours(n) for n in names):
        raise FirecError(f"{target} exists and {refusal}")


def staging_dir(target: Path) -> Path:
    """A new directory beside ``target`` to make its next content in (see :func:`replace_dir`).

    Raises:
        FirecError: it cannot be made.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
    except OSError as exc:
        raise FirecError(f"cannot create {target}: {exc.strerror or exc}") from exc
