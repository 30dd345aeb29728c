"""Package doors that import a name's module on first use (PEP 562).

A package's ``__init__`` lists where each public name lives; ``import
firec.vm`` then costs nothing until a name is read, so a program that needs a
corner of firec (the emulator, one CLI command) never imports the rest::

    __getattr__, __dir__ = lazy_door(__name__, {"Machine": "firec.vm._sync.machine"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_door"]


def lazy_door(
    package: str,
    homes: Mapping[str, str],
    submodules: Iterable[str] = (),
    modules: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        homes: public name -> the module that defines it.
        submodules: modules of the package reachable as attributes
            (``firec.vm.streams``) without importing them first.
        modules: other modules reachable as attributes: attribute -> module
            (``firec.models`` is ``firec.api.models``).
    """
    names = dict(homes)
    attributes = {name: f"{package}.{name}" for name in submodules} | dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in attributes:
            return importlib.import_module(attributes[name])
        home = names.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names) | set(attributes))

    return __getattr__, __dir__
