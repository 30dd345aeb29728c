"""Firecracker run plainly: :class:`PlainLayout` (see :mod:`firec.vm.layout`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from firec.vm._checks import absolute_path
from firec.vm.layout._base import BringIn, JailSettings, Layout, PathArg

__all__ = ["PlainLayout"]


@dataclass(frozen=True)
class PlainLayout(Layout):
    """Firecracker runs on the host as this process: its paths are host paths.

    A relative path it is given is relative to ``vm_dir``, where it runs.

    Attributes:
        vm_dir: firec's own directory for the VM: the default API socket, log,
            config file and page-fault handler socket are made there.
    """

    vm_dir: Path
    jailed: ClassVar[bool] = False

    @classmethod
    def _for(
        cls, vm_id: str, vm_dir: Path, jailer: JailSettings | None, exec_file: Callable[[], Path]
    ) -> PlainLayout:
        return cls(vm_dir)

    def record(self) -> dict[str, Any]:
        """No jail to record."""
        return {"jail": None, "jail_owner": None}

    @classmethod
    def check_runtime_path(cls, field: str, value: object) -> None:
        """A host path: it must be absolute."""
        absolute_path(field, value)

    @classmethod
    def config_directories(cls, jailer: JailSettings | None) -> list[tuple[str, Path]]:
        """None: a plain VM's directories are the config's own (workdir, state_dir)."""
        return []

    @classmethod
    def check_input_name(cls, field: str, path: Path, taken: dict[str, str]) -> None:
        """Any file fits: Firecracker opens each at its own host path."""

    def seen(self, host_path: PathArg) -> str:
        """``host_path`` itself."""
        return os.fspath(host_path)

    def on_host(self, seen_path: PathArg) -> Path:
        """``seen_path`` itself (under ``vm_dir`` when relative)."""
        return self.vm_dir / seen_path

    def api_socket(self, given: PathArg | None) -> str:
        """``given``, else ``<vm_dir>/firecracker.socket``."""
        return os.fspath(given if given is not None else self.vm_dir / "firecracker.socket")

    def own_file(self, name: str) -> Path:
        """``<vm_dir>/<name>``."""
        return self.vm_dir / name

    def holds(self, host_path: Path) -> bool:
        """Nothing: the VM's directory is the machine's to remove."""
        return False

    def pidfile(self, exec_file: Path | None = None) -> None:
        """No jailer, no pidfile: Firecracker is the process firec started."""
        return None

    @property
    def owner(self) -> None:
        """Firecracker runs as this process: what firec makes stays as it is."""
        return None

    @property
    def vmm_uid(self) -> int:
        """This process's uid."""
        return os.geteuid()

    @property
    def log_timezone(self) -> None:
        """Firecracker logs the host's local time."""
        return None

    def check_bring_in(
        self, host_path: PathArg, *, writable: bool = False, field: str = "path"
    ) -> BringIn:
        """``"as-is"``: Firecracker opens the user's path."""
        return "as-is"

    def bring_in(
        self,
        host_path: PathArg,
        *,
        writable: bool = False,
        at: str | None = None,
        field: str = "path",
    ) -> str:
        """Nothing to do: Firecracker opens ``at`` (default ``host_path``) on the host."""
        return at if at is not None else os.fspath(host_path)

    def opened_file(self, host_path: PathArg, at: str | None = None) -> Path:
        """What is at ``at`` on the host (default ``host_path``): nothing is brought anywhere."""
        return self.on_host(at if at is not None else host_path)

    def make_dirs(self, seen_dir: PathArg) -> Path:
        """Make the directory; it stays this process's."""
        host = self.on_host(seen_dir)
        host.mkdir(parents=True, exist_ok=True)
        return host

    def make_own_dirs(self, seen_dir: PathArg) -> None:
        """Make the directory if it is under ``vm_dir``."""
        if self.on_host(seen_dir).is_relative_to(self.vm_dir):
            self.make_dirs(seen_dir)

    def make_device(self, device: Path) -> None:
        """Nothing: Firecracker opens the host's device."""

    def staging_dir(self, target: Path) -> Path:
        """``target`` itself: Firecracker writes there directly."""
        return target

    def remove(self) -> list[str]:
        """Nothing to remove."""
        return []
