"""The package's surface: every exported name resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import firec


def test_every_exported_name_resolves() -> None:
    for name in firec.__all__:
        assert getattr(firec, name) is not None, name
    assert firec.Machine.__module__ == "firec.machine"
    assert firec.errors.APIError is firec.APIError


def test_importing_firec_loads_no_heavy_dependency() -> None:
    code = "import sys, firec; print(sorted(m for m in ('httpx', 'pydantic') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_py_typed_ships() -> None:
    from importlib.resources import files

    assert files("firec").joinpath("py.typed").is_file()
