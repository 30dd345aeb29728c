"""The jailer's cgroups: ``--cgroup <file>=<value>`` checked, then made and joined.

:func:`parse_cgroups` checks the values as the jailer does (cgroup version,
format, file name, controller mounted); each :class:`Cgroup` then makes its
directory ``<controller mount>/<parent>/<id>`` and sets its file (v1: values
inherited from the parents as the jailer copies them; v2: the controller
enabled in the parents' ``cgroup.subtree_control``), and takes the process in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._args import parse_uint
from ._panic import jailer_error, unwrap

__all__ = ["Cgroup", "bad_components", "parse_cgroups"]


def bad_components(path: str) -> bool:
    """Whether ``path`` has a root, ``.`` or ``..`` component (as Rust's ``Path`` sees them)."""
    return path.startswith("/") or path == "." or path.startswith("./") or ".." in path.split("/")


def _mounts(fstype: str) -> list[tuple[str, list[str]]]:
    """Mount points of ``fstype`` with their options, from ``/proc/mounts``."""
    found = []
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == fstype:
                found.append((fields[1].replace("\\040", " "), fields[3].split(",")))
    return found


def _controller_mount(controller: str, version: int) -> str | None:
    """Where ``controller``'s hierarchy is mounted, or None when it is unavailable."""
    if version == 1:
        return next((point for point, opts in _mounts("cgroup") if controller in opts), None)
    for point, _ in _mounts("cgroup2")[:1]:
        try:
            with open(os.path.join(point, "cgroup.controllers"), encoding="utf-8") as f:
                available = f.read().split()
        except OSError:
            return None
        return point if controller in available else None
    return None


def _read_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except OSError as exc:
        raise unwrap("ReadToString", path, exc, "src/jailer/src/env.rs:520:34") from None


def _write_line(path: str, text: str, where: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, f"{text}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise unwrap("Write", path, exc, where) from None


@dataclass(frozen=True)
class Cgroup:
    """One ``--cgroup <file>=<value>`` of a VM: where it goes and how it is set."""

    version: int
    controller: str
    file: str
    value: str
    directory: str

    def write_value(self) -> None:
        where = "src/jailer/src/env.rs:520:34"
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise unwrap("CreateDir", self.directory, exc, where) from None
        if self.version == 1:
            self._inherit(self.directory)
        else:
            self._enable_in_parents()
        _write_line(os.path.join(self.directory, self.file), self.value, where)

    def _inherit(self, directory: str) -> None:
        """v1: copy the file's value down from the nearest ancestor where it is set."""
        parent_file = os.path.join(os.path.dirname(directory), self.file)
        line = _read_line(parent_file)
        if not line:
            self._inherit(os.path.dirname(directory))
            line = _read_line(parent_file)
        _write_line(os.path.join(directory, self.file), line, "src/jailer/src/env.rs:520:34")

    def _enable_in_parents(self) -> None:
        """v2: ``+<controller>`` in the ``cgroup.subtree_control`` of every parent."""
        parents = []
        directory = os.path.dirname(self.directory)
        while os.path.exists(os.path.join(directory, "cgroup.subtree_control")):
            parents.append(directory)
            if directory == os.path.dirname(directory):
                break
            directory = os.path.dirname(directory)
        for parent in reversed(parents):
            _write_line(
                os.path.join(parent, "cgroup.subtree_control"),
                f"+{self.controller}",
                "src/jailer/src/env.rs:520:34",
            )

    def attach(self, pid: int) -> None:
        name = "tasks" if self.version == 1 else "cgroup.procs"
        _write_line(os.path.join(self.directory, name), str(pid), "src/jailer/src/env.rs:525:33")


def parse_cgroups(specs: list[str], version_text: str, vm_id: str, parent: str) -> list[Cgroup]:
    """The ``--cgroup`` values, checked as the jailer checks them; raises Panic."""
    version, _ = parse_uint(version_text, 8)
    if version is None:
        raise jailer_error(f"{version_text} is an invalid cgroup version specifier")
    if not specs:
        return []
    if version not in (1, 2):
        raise jailer_error(f"{version_text} is an invalid cgroup version specifier")
    cgroups = []
    for spec in specs:
        parts = spec.split("=")
        if len(parts) != 2 or not parts[1]:
            raise jailer_error(f"Invalid format for cgroups: {spec}")
        file, value = parts
        if bad_components(file):
            raise jailer_error(f"Cgroup invalid file: {spec}")
        if "." not in file:
            raise jailer_error(f"Cgroup invalid file: {file}")
        controller = file.split(".", 1)[0]
        mount = _controller_mount(controller, version)
        if mount is None:
            raise jailer_error(f"Controller {controller} is unavailable")
        directory = os.path.join(mount, parent, vm_id)
        cgroups.append(Cgroup(version, controller, file, value, directory))
    return cgroups
