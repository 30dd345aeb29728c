"""The package's surface: every exported name resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import firec


def test_every_exported_name_resolves() -> None:
    for name in firec.__all__:
        assert getattr(firec, name) is not None, name
    assert firec.Machine.__module__ == "firec.vm._sync.machine"
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


def test_every_public_subpackage_is_reachable_from_import_firec() -> None:
    """``import firec`` alone is enough for ``firec.network``, ``firec.images``..."""
    names = ("api", "cli", "errors", "host", "images", "network", "snapshots", "testing", "vm")
    code = (
        "import sys, types, firec\n"
        f"for name in {names!r}:\n"
        "    module = getattr(firec, name)\n"
        "    assert isinstance(module, types.ModuleType), name\n"
        "    assert module.__name__ == 'firec.' + name, module.__name__\n"
        "    assert name in dir(firec), name\n"
        "assert firec.network.VMNetwork is not None\n"
        "assert firec.images.build_rootfs is not None\n"
        "assert firec.testing.Emulator is not None\n"
        "assert firec.models.__name__ == 'firec.api.models'\n"
        "assert firec.versions.Version is firec.api.Version\n"
        "try:\n"
        "    firec.no_such_module\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_module' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('firec.no_such_module resolved')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
