"""The module paths of firec before its layers became packages, kept working.

``from firec.config import Config`` or ``import firec.models`` still import
what they did (the same module objects as ``firec.vm.config`` and
``firec.api.models``), with a :class:`DeprecationWarning` that names the new
home. Only the paths change: every class and function is the same object.
Type checkers see the new paths only.

Example::

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     import firec.config
    >>> import firec.vm.config
    >>> firec.config is firec.vm.config
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import CodeType, ModuleType

__all__ = ["MOVED", "install"]

#: Old top-level module of firec -> where it lives now.
MOVED = {
    "async_client": "firec.api._async.client",
    "async_machine": "firec.vm._async.machine",
    "client": "firec.api._sync.client",
    "config": "firec.vm.config",
    "console": "firec.vm.console",
    "install": "firec.host.install",
    "jailer": "firec.vm.jailer",
    "launch": "firec.vm._launch",
    "logs": "firec.vm.logs",
    "machine": "firec.vm._sync.machine",
    "metrics": "firec.vm.metrics",
    "models": "firec.api.models",
    "operations": "firec.api.operations",
    "process": "firec.vm.process",
    "registry": "firec.host.registry",
    "restore": "firec.vm._restore",
    "snapshot": "firec.snapshots.snapshot",
    "snapshot_format": "firec.snapshots._format",
    "sparse": "firec.snapshots._sparse",
    "state": "firec.vm.state",
    "streams": "firec.vm.streams",
    "transport": "firec.api.transport",
    "uffd": "firec.snapshots.uffd",
    "versions": "firec.api.versions",
    "vsock": "firec.vm.vsock",
}


def new_home(fullname: str) -> str | None:
    """Where the old module ``fullname`` (``firec.models.drive``...) lives now."""
    package, _, rest = fullname.partition(".")
    if package != "firec" or not rest:
        return None
    head, dot, tail = rest.partition(".")
    home = MOVED.get(head)
    return None if home is None else home + dot + tail


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and hands out the module at its new home."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        home = new_home(fullname)
        if home is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=home)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        home = str(spec.loader_state)
        warnings.warn(
            f"{spec.name} is now {home}: import it from there (or from its package's door)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(home)
        spec.loader_state = module.__spec__  # the import system overwrites __spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state  # type: ignore[union-attr]

    def get_code(self, fullname: str) -> CodeType | None:
        """The new module's code: ``python -m firec.uffd`` runs ``firec.snapshots.uffd``."""
        home = new_home(fullname)
        if home is None:
            return None
        spec = importlib.util.find_spec(home)
        if spec is None or not isinstance(spec.loader, importlib.abc.InspectLoader):
            return None
        return spec.loader.get_code(home)


def install() -> None:
    """Make the old paths importable (done once by ``import firec``)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
