"""Emulator-only flags that let firec's jailer emulator run the emulator "as if" jailed.

The real jailer chroots Firecracker into ``<root>`` and switches to the jail's
user. :mod:`firec.testing.jailer` does neither (no chroot: the Python
interpreter lives outside the jail); it passes these flags instead, which real
Firecracker does not have:

* ``--emulate-chroot ROOT``: every path the emulator is given (API socket,
  log and metrics paths, kernel, initrd, drives, pmem, vsock socket, serial
  output, snapshot and memory files, config and metadata files) is resolved
  under ``ROOT``, as a chrooted Firecracker resolves it: absolute paths and
  paths relative to ``/`` (the working directory of a jailed Firecracker) alike,
  ``..`` stopping at ``ROOT``. The working directory becomes ``ROOT`` and paths
  are opened relative to it, so the directories above ``ROOT`` need not be
  searchable by the jail's user. Log lines are in UTC, as in a jail without
  ``/etc/localtime``. Messages and API answers show the paths as given.
  Not emulated: a symbolic link inside ``ROOT`` pointing to an absolute path
  resolves on the host.
* ``--emulate-user UID:GID``: after start-up (all of the emulator's modules
  loaded), drop to ``UID``/``GID`` with no supplementary groups, before any
  file is touched. The real jailer switches user before exec; the emulator
  does it itself because its interpreter may live where ``UID`` cannot read.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pkgutil
import posixpath
import time

__all__ = ["CHROOT_FLAG", "USER_FLAG", "enter", "host_path", "parse_user"]

CHROOT_FLAG = "--emulate-chroot"
USER_FLAG = "--emulate-user"
_PR_SET_DUMPABLE = 4

_chrooted = False


def host_path(path: str) -> str:
    """Where the emulator opens ``path``, a path as Firecracker was given it.

    Unchanged unless ``--emulate-chroot`` is in effect; then the path inside the
    root, relative to the working directory (the root).
    """
    if not _chrooted:
        return path
    inside = posixpath.normpath(posixpath.join("/", path)).lstrip("/")
    return "./" + inside if inside else "."


def parse_user(text: str) -> tuple[int, int]:
    """``UID:GID`` as two numbers; raises ValueError."""
    uid, sep, gid = text.partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise ValueError(f"{USER_FLAG} needs UID:GID (numbers), not {text!r}")
    return int(uid), int(gid)


def enter(root: str | None, user: tuple[int, int] | None) -> None:
    """Apply ``--emulate-chroot`` and ``--emulate-user``; raises OSError."""
    global _chrooted
    if root is not None:
        os.chdir(root)
        localtime = os.path.abspath("etc/localtime")
        os.environ["TZ"] = f":{localtime}" if os.path.isfile(localtime) else "UTC"
        time.tzset()
        _chrooted = True
    if user is not None:
        _load_everything()
        uid, gid = user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        # like a process exec'd by that user (a credential change clears it)
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def _load_everything() -> None:
    """Import every emulator module now: later, the user may not be able to read them."""
    package = __name__.rpartition(".")[0]
    here = os.path.dirname(__file__)
    for module in pkgutil.iter_modules([here]):
        if not module.name.startswith("__"):
            importlib.import_module(f"{package}.{module.name}")
