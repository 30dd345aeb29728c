"""The documentation site: its examples run, and it builds.

* every ```` ```python ```` block of ``docs/`` that uses firec's emulator runs as written
  (a block that starts with ``# needs: root`` only as root);
* every ```` ```sh ```` block marked ``<!-- runs in tests -->`` runs as written, with
  ``FIRECRACKER_BIN`` set to the emulator and a private host state;
* ``mkdocs build --strict`` succeeds (when mkdocs is installed: the ``docs`` extra);
* the exit codes the command-line page lists are the ones ``firec`` uses.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from firec.cli.output import ExitCode
from firec.testing.binaries import emulator_binary
from tests.support import module_wrapper

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _blocks(language: str, *, marked: bool = False) -> list[tuple[str, str]]:
    """``(page:line, code)`` of each ``language`` block in the docs."""
    found = []
    marker = r"<!-- runs in tests -->\n" if marked else ""
    pattern = re.compile(marker + r"```" + language + r"\n(.*?)```", re.DOTALL)
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(DOCS)}:{line}", match.group(1)))
    return found


PYTHON = [(where, code) for where, code in _blocks("python") if "emulator" in code.lower()]
SHELL = _blocks("sh", marked=True)


def test_the_docs_have_runnable_examples() -> None:
    pages = {where.split(":")[0] for where, _ in PYTHON + SHELL}
    assert {"tutorial.md", "howto/snapshots.md", "howto/testing.md", "howto/jailer.md"} <= pages


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_example_runs(where: str, code: str, tmp_path: Path) -> None:
    if code.startswith("# needs: root") and os.geteuid() != 0:
        pytest.skip(f"{where} needs root")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("FIRECRACKER_BIN", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize(("where", "code"), SHELL, ids=[w for w, _ in SHELL])
def test_shell_example_runs(where: str, code: str, short_tmp: Path) -> None:
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    # `firec` even where the console script is not installed
    shim = module_wrapper(bin_dir / "firec", "firec.cli")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FIRECRACKER_BIN": str(emulator_binary()),
        "FIREC_STATE_DIR": str(short_tmp / "state"),
        "XDG_RUNTIME_DIR": str(short_tmp / "run"),
    }
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=short_tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
    finally:
        left = subprocess.run(
            [str(shim), "ls", "-q"], env=env, capture_output=True, text=True, check=False
        ).stdout.split()
        if left:
            subprocess.run([str(shim), "rm", "-f", *left], env=env, check=False)
    assert not left, f"{where} left microVMs behind: {left}"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings") if not importlib.util.find_spec(m)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    machine_page = (tmp_path / "site" / "reference" / "machine" / "index.html").read_text()
    assert "flush_metrics" in machine_page  # the API reference comes from the docstrings
    assert "restore" in machine_page  # ... of every layer the machine is made of
    client_page = (tmp_path / "site" / "reference" / "client" / "index.html").read_text()
    assert "put_machine_config" in client_page  # the endpoints, which the client inherits


def test_the_exit_codes_in_the_docs_are_firecs() -> None:
    text = (DOCS / "cli.md").read_text()
    table = text.split("## Exit status", 1)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
