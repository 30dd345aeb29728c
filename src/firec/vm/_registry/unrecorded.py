"""Finding a VMM whose pid was never recorded: by its socket, its cgroups, its jail, its arguments.

A controller that dies between spawning the VMM and recording its pid leaves
a VMM nobody knows; :func:`find_unrecorded_vmm` finds it from what the record
does name, so that :func:`~firec.host.registry.reap` can kill it.

Example::

    >>> from pathlib import Path
    >>> from firec.host.registry import VmRecord
    >>> from firec.vm.config import Config
    >>> config = Config(vm_id="never-started", kernel_image=Path("/k"))
    >>> record = VmRecord.new(config, detached=False)
    >>> find_unrecorded_vmm(record)
    []
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

from firec._proc import command_lines
from firec.vm._registry.records import VmRecord
from firec.vm.layout import JailedLayout, layout_from_record

__all__ = ["find_unrecorded_vmm"]


def find_unrecorded_vmm(record: VmRecord) -> list[int]:
    """Pids of processes started for ``record`` whose pid was never recorded.

    A controller that dies between spawning the VMM and recording its pid
    leaves a VMM nobody knows. After the jailer's exec, Firecracker's command
    line no longer names the jail, so it is found by what survives the exec:

    * the process listening on the recorded API socket (``SO_PEERCRED``);
    * the cgroups the jailer put it in;
    * a root (``/proc/<pid>/mountinfo``) that is the recorded jail.

    Before the exec (or plainly) its command line names it: ``--id <vm id>``
    with ``--api-sock`` (plain), or the jailer's ``--id`` and
    ``--chroot-base-dir`` of the recorded jail.
    """
    found: set[int] = set()
    if record.socket is not None:
        listener = _socket_owner(Path(record.socket))
        if listener is not None:
            found.add(listener)
    if record.cgroups:
        found.update(_pids_in_cgroups(record.cgroups))
    found.update(_find_by_command_line(record))
    found.discard(os.getpid())
    return sorted(found)


def _find_by_command_line(record: VmRecord) -> list[int]:
    wanted_id = os.fsencode(record.vm_id)
    layout = layout_from_record(Path(record.vm_dir or "/"), record.jail, record.jail_owner)
    jail = layout if isinstance(layout, JailedLayout) else None
    found = []
    for pid, argv in command_lines(skip_self=True):
        flags = dict(itertools.pairwise(argv))
        if flags.get(b"--id") != wanted_id:
            continue
        if jail is None:
            if record.socket and flags.get(b"--api-sock") == os.fsencode(record.socket):
                found.append(pid)
        elif flags.get(b"--chroot-base-dir") == os.fsencode(jail.chroot_base):
            found.append(pid)  # the jailer, before its exec
        elif flags.get(b"--emulate-chroot") == os.fsencode(jail.root):
            found.append(pid)  # firec's emulator, as its emulated jailer ran it
        elif b"--start-time-us" in argv and _jail_root_of(pid) == jail.root:
            found.append(pid)  # Firecracker as the jailer exec'd it
    return found


def _socket_owner(path: Path) -> int | None:
    """The pid of the process that listens on the Unix socket ``path``, if one does."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(os.fspath(path))
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        probe.close()
    pid, _, _ = struct.unpack("3i", creds)
    return pid if pid > 0 else None


def _jail_root_of(pid: int) -> Path | None:
    """The directory a process was chrooted or pivoted into (as its root mount shows it)."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":  # the mount at its "/": fields[3] is its source
            return Path(fields[3].replace("\\040", " "))
    return _root_of(pid)


def _pids_in_cgroups(cgroups: Sequence[str]) -> list[int]:
    """The processes in these cgroup directories (v1 ``tasks``/``cgroup.procs``, or v2)."""
    found: set[int] = set()
    for directory in cgroups:
        try:
            text = Path(directory, "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(line) for line in text.split() if line.isdigit())
    found.discard(os.getpid())
    return sorted(found)


def _root_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/root"))
    except OSError:
        return None
