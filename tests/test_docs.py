"""The README's examples and the quickstart run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_examples_run(tmp_path: Path) -> None:
    blocks = [
        b for b in _python_blocks((ROOT / "README.md").read_text()) if "emulator_binary()" in b
    ]
    assert len(blocks) >= 2, "the README lost its runnable examples"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "Running" in result.stdout, result.stdout


@pytest.mark.parametrize("backend", ["emulator", "firecracker"])
def test_quickstart_boots_the_guest(backend: str, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    if backend == "emulator":
        env.pop("FIRECRACKER_BIN", None)
    elif not os.environ.get("FIRECRACKER_BIN"):
        pytest.skip("FIRECRACKER_BIN is not set: no real Firecracker to boot on")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "firec-guest: echo hello-from-firec" in result.stdout
    assert "exit code 0" in result.stdout
