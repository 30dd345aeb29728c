"""JSON state files that a crash, a full disk or a second process cannot leave half-written.

firec keeps what must outlive a process in small JSON files: VM records (the
host registry), network set-up records, leases. Each is written whole into a
temporary file beside it and then put in place in one step:

* :func:`write` replaces a file atomically (``rename``);
* :func:`create` makes a file that must not exist yet, with its content, in
  one step (``link``): a second process, or a retry after a crash, finds
  either nothing or the whole record, never an empty file;
* :func:`read` reads one back, checking its ``format`` tag.

A write that fails (a full disk, a read-only directory) leaves nothing behind
and raises :class:`~firec.errors.StateError` naming the file and the reason.

Example::

    from firec import _jsonfile

    _jsonfile.create(path, {"format": "firec-x/1", "steps": []})   # FileExistsError if there
    data = _jsonfile.read(path, "firec-x/1")                       # None if missing
    _jsonfile.write(path, {**data, "steps": [1]})
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from firec.errors import StateError

__all__ = ["create", "read", "write"]


def _dump(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _temporary(path: Path, data: Mapping[str, Any]) -> str:
    """Write ``data`` into a new temporary file beside ``path``; its name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise StateError(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_dump(data))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write(path: Path, data: Mapping[str, Any], *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step.

    Raises:
        StateError: it could not be written (the previous content is kept).
    """
    tmp = _temporary(path, data)
    try:
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(path, exc) from exc


def create(path: Path, data: Mapping[str, Any], *, mode: int = 0o600) -> None:
    """Make ``path`` with ``data`` in one step, unless it exists.

    Raises:
        FileExistsError: ``path`` is already there (it is left as it was).
        StateError: it could not be written (nothing is left behind).
    """
    tmp = _temporary(path, data)
    try:
        os.chmod(tmp, mode)
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StateError(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read(path: Path, record_format: str) -> dict[str, Any] | None:
    """The data in ``path`` (``None`` when there is no such file).

    Raises:
        StateError: the file cannot be read, or is not a ``record_format`` record.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(path, exc) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(path, f"not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != record_format:
        raise StateError(path, f"not a {record_format} record")
    return data
