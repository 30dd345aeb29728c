"""The e2fsprogs tools firec drives: finding them, their version, and debugfs scripts.

``mkfs.ext4``, ``e2fsck`` and ``debugfs`` usually live in ``/usr/sbin``, which an
ordinary user's ``PATH`` often lacks, so :func:`find_tool` looks there too::

    >>> from firec.images.e2fs import find_tool
    >>> find_tool("mkfs.ext4")  # doctest: +SKIP
    PosixPath('/usr/sbin/mkfs.ext4')
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from firec.errors import FirecError

__all__ = [
    "E2FS_TOOLS",
    "debugfs_quote",
    "e2fsprogs_version",
    "find_tool",
    "require_tool",
    "run_debugfs",
]

#: The e2fsprogs programs firec uses.
E2FS_TOOLS: tuple[str, ...] = ("mkfs.ext4", "e2fsck", "debugfs")

_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_INSTALL_HINT = (
    "install e2fsprogs (Debian/Ubuntu: apt-get install e2fsprogs; "
    "Fedora: dnf install e2fsprogs; Alpine: apk add e2fsprogs e2fsprogs-extra)"
)


def find_tool(name: str) -> Path | None:
    """Where the e2fsprogs program ``name`` is: ``PATH`` first, then the sbin directories."""
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))
    return Path(found) if found else None


def require_tool(name: str, purpose: str) -> Path:
    """Like :func:`find_tool`, but raise a :class:`FirecError` saying how to get it."""
    path = find_tool(name)
    if path is None:
        raise FirecError(f"{name} not found (needed to {purpose}); {_INSTALL_HINT}")
    return path


def e2fsprogs_version(mkfs: Path) -> tuple[int, int, int] | None:
    """The e2fsprogs version of a ``mkfs.ext4``/``mke2fs`` binary (``(1, 47, 0)``), if it says."""
    try:
        proc = subprocess.run(
            [str(mkfs), "-V"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", proc.stdout + proc.stderr)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def debugfs_quote(path: str) -> str:
    """Quote a path for a debugfs command line (a doubled quote is a literal quote)."""
    if "\n" in path or "\r" in path:
        raise FirecError(f"cannot handle a file name with a line break in an ext4 image: {path!r}")
    return '"' + path.replace('"', '""') + '"'


def run_debugfs(image: Path, commands: Sequence[str], *, write: bool = False) -> str:
    """Run debugfs commands on ``image``; return their output, raise on any error they report.

    debugfs exits 0 even when a command fails, so its error stream is what tells.
    """
    debugfs = require_tool("debugfs", "edit ext4 images")
    args = [str(debugfs)]
    if write:
        args.append("-w")
    args += ["-f", "-", str(image)]
    proc = subprocess.run(
        args, input="\n".join(commands) + "\n", capture_output=True, text=True, check=False
    )
    noise = ("debugfs ", "Allocated inode")
    errors = [
        line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(noise)
    ]
    if proc.returncode != 0 or errors:
        detail = "; ".join(errors[:5]) or f"exit status {proc.returncode}"
        raise FirecError(f"debugfs failed on {image}: {detail}")
    return proc.stdout
