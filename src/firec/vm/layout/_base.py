"""What every layout answers: :class:`Layout` (see :mod:`firec.vm.layout`)."""

from __future__ import annotations

import abc
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from firec.errors import MachineError

__all__ = ["BringIn", "JailSettings", "Layout", "PathArg"]

#: How a file gets to where Firecracker opens it: ``"as-is"`` (it opens the
#: user's path), ``"link"`` (a hard link in the jail), ``"copy"`` (a copy owned
#: by the jail's user) or ``"node"`` (a new device node for a block device).
BringIn = Literal["as-is", "link", "copy", "node"]

#: A path as the layout's methods take it.
PathArg = str | os.PathLike[str]


class JailSettings(Protocol):
    """What a jail is made of: :class:`~firec.vm.jailer.JailerConfig` has these."""

    @property
    def chroot_base_dir(self) -> Path: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...


class Layout(abc.ABC):
    """Where one VM's files are: the host's view and Firecracker's, and who owns what.

    Attributes:
        jailed: whether Firecracker runs chrooted in a jail (snapshots and
            host records say so).
    """

    jailed: ClassVar[bool]

    @classmethod
    @abc.abstractmethod
    def _for(
        cls, vm_id: str, vm_dir: Path, jailer: JailSettings | None, exec_file: Callable[[], Path]
    ) -> Layout: ...

    @abc.abstractmethod
    def record(self) -> dict[str, Any]:
        """What a host record keeps of the layout: ``jail`` and ``jail_owner``."""

    @classmethod
    @abc.abstractmethod
    def check_runtime_path(cls, field: str, value: object) -> None:
        """Check a path the config gives for Firecracker's own files (socket, log, metrics...).

        Plainly they are host paths and must be absolute; in a jail they are
        paths inside it, taken from its top.
        """

    @classmethod
    @abc.abstractmethod
    def config_directories(cls, jailer: JailSettings | None) -> list[tuple[str, Path]]:
        """The directories the layout's settings name, with their fields (each must be one)."""

    @classmethod
    @abc.abstractmethod
    def check_input_name(cls, field: str, path: Path, taken: dict[str, str]) -> None:
        """Check that ``path``, a file the VM reads (named by ``field``), fits beside the others.

        ``taken`` is the caller's, kept across the VM's files: their names -> their fields.
        """

    # -- paths ----------------------------------------------------------------------------

    @abc.abstractmethod
    def seen(self, host_path: PathArg) -> str:
        """The path Firecracker is given for the file at ``host_path``."""

    @abc.abstractmethod
    def on_host(self, seen_path: PathArg) -> Path:
        """The host path of ``seen_path``, a path as Firecracker sees it."""

    @abc.abstractmethod
    def api_socket(self, given: PathArg | None) -> str:
        """The ``--api-sock`` value: ``given`` (the config's ``socket_path``), or the default."""

    @abc.abstractmethod
    def own_file(self, name: str) -> Path:
        """The host path of a file ``name`` that firec makes for Firecracker (config, log...)."""

    @abc.abstractmethod
    def holds(self, host_path: Path) -> bool:
        """Whether ``host_path`` is inside what :meth:`remove` removes."""

    @abc.abstractmethod
    def pidfile(self, exec_file: Path | None = None) -> Path | None:
        """The jailer's pidfile (``--new-pid-ns``), or ``None`` where there is no jailer."""

    # -- who ------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def owner(self) -> tuple[int, int] | None:
        """The uid and gid to give what firec makes for Firecracker; ``None``: keep them ours."""

    @property
    @abc.abstractmethod
    def vmm_uid(self) -> int:
        """The uid Firecracker runs as."""

    @property
    @abc.abstractmethod
    def log_timezone(self) -> datetime.tzinfo | None:
        """The zone of Firecracker's log times; ``None``: the host's local time."""

    # -- bringing files in ------------------------------------------------------------------

    @abc.abstractmethod
    def check_bring_in(
        self, host_path: PathArg, *, writable: bool = False, field: str = "path"
    ) -> BringIn:
        """How :meth:`bring_in` would bring ``host_path`` in, or why it cannot; changes nothing."""

    @abc.abstractmethod
    def bring_in(
        self,
        host_path: PathArg,
        *,
        writable: bool = False,
        at: str | None = None,
        field: str = "path",
    ) -> str:
        """Put a file the user gave where Firecracker opens it; return that path as it sees it.

        ``at`` is where Firecracker will open it (default :meth:`seen`).
        """

    @abc.abstractmethod
    def opened_file(self, host_path: PathArg, at: str | None = None) -> Path:
        """The host file Firecracker opens at ``at`` once ``host_path`` is brought in there."""

    # -- making -----------------------------------------------------------------------------

    def make_root(self) -> None:  # noqa: B027 - plainly there is nothing to make
        """Make the directory Firecracker sees as ``/`` (the jail's chroot), if it is ours."""

    @abc.abstractmethod
    def make_dirs(self, seen_dir: PathArg) -> Path:
        """Make a directory (and its parents) Firecracker uses, owned by whom it runs as."""

    @abc.abstractmethod
    def make_own_dirs(self, seen_dir: PathArg) -> None:
        """:meth:`make_dirs`, but only inside the VM's own tree (its directory, or its jail).

        Directories elsewhere on the host are the caller's to make.
        """

    def give(self, host_path: Path) -> None:
        """Give a file firec made to whom Firecracker runs as (:attr:`owner`)."""
        if self.owner is not None:
            os.chown(host_path, *self.owner)

    def make_output(self, host_path: Path, *, fifo: bool) -> None:
        """Make a file or a fifo (refused where a path is) Firecracker writes to; give it."""
        host_path.parent.mkdir(parents=True, exist_ok=True)
        if fifo:
            if host_path.exists():
                raise MachineError(f"cannot make fifo {host_path}: the path already exists")
            os.mkfifo(host_path, 0o600)
        else:
            host_path.touch(mode=0o600)
        self.give(host_path)

    def make_fifo(self, seen_path: PathArg) -> Path:
        """Make a fifo Firecracker sees at ``seen_path``, owned by whom it runs as."""
        host = self.on_host(seen_path)
        self.make_output(host, fifo=True)
        return host

    def write_file(self, host_path: Path, text: str) -> None:
        """Write a file for Firecracker to read, and :meth:`give` it."""
        host_path.write_text(text)
        self.give(host_path)

    @abc.abstractmethod
    def make_device(self, device: Path) -> None:
        """Give Firecracker a character device of the host (``/dev/userfaultfd``) to open."""

    @abc.abstractmethod
    def staging_dir(self, target: Path) -> Path:
        """Where Firecracker writes files (a snapshot's) that firec then brings to ``target``."""

    @abc.abstractmethod
    def remove(self) -> list[str]:
        """Remove what the layout made (the jail); return what could not be removed."""
