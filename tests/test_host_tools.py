"""The one rule for host tools (tests/host_tools.py): .ci/run installs each, and a test
whose tool is missing skips, naming it, its package and .ci/run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import host_tools
from tests.host_tools import HOST_TOOLS

REPO = Path(__file__).resolve().parents[1]

NEEDS_NFT = """
import subprocess
import pytest

@pytest.mark.needs_tool("nft")
def test_lists_rules():
    subprocess.run(["nft", "--version"], check=True)

def test_needs_nothing():
    pass

@pytest.mark.needs_tool("no-such-tool")
def test_names_an_unknown_tool():
    pass
"""


def _run_pytest(test_file: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "tests.host_tools", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, "-rsf", "-q", str(test_file)],
        cwd=test_file.parent,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_tool_skips_the_tests_that_need_it_naming_it(tmp_path: Path) -> None:
    """A host without nft (PATH lacking it, no sbin fallback): skipped, with the reason."""
    test_file = tmp_path / "test_needs_nft.py"
    test_file.write_text(NEEDS_NFT)
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), host_tools.DIRS_VARIABLE: ""}
    result = _run_pytest(test_file, env)
    out = result.stdout
    assert "1 passed, 1 skipped, 1 error" in out, out + result.stderr
    assert re.search(r"SKIPPED .*needs nft \(nft\).*not installed.*nftables.*\.ci/run", out), out
    assert "unknown host tool 'no-such-tool'" in out, out


@pytest.mark.skipif(host_tools.find("nft") is None, reason="nft is not installed here")
def test_a_present_tool_lets_the_test_run(tmp_path: Path) -> None:
    test_file = tmp_path / "test_needs_nft.py"
    test_file.write_text(NEEDS_NFT)
    result = _run_pytest(test_file, dict(os.environ))
    assert "2 passed, 1 error" in result.stdout, result.stdout + result.stderr


def test_the_lookup_follows_path_then_the_sbin_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where firec looks (PATH, then /usr/sbin, /sbin): a tool in either counts."""
    bin_dir, sbin_dir = tmp_path / "bin", tmp_path / "sbin"
    bin_dir.mkdir()
    sbin_dir.mkdir()
    fake = sbin_dir / "nft"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv(host_tools.DIRS_VARIABLE, "")
    assert host_tools.find("nft") is None
    assert "nftables" in (host_tools.missing("nft") or "")
    monkeypatch.setenv(host_tools.DIRS_VARIABLE, str(sbin_dir))
    assert host_tools.find("nft") == str(fake)
    assert host_tools.missing("nft") is None
    with pytest.raises(KeyError, match="unknown host tool"):
        host_tools.missing("nmap")


def _ci_tools() -> dict[str, str]:
    script = (REPO / ".ci" / "run").read_text()
    match = re.search(r"^tools=\((.*?)\)", script, re.S | re.M)
    assert match, ".ci/run has no tools=(...) list"
    return dict(pair.split(":", 1) for pair in match.group(1).split())


def test_ci_installs_every_host_tool_the_tests_name() -> None:
    on_path = {t.executable: t.package for t in HOST_TOOLS.values() if not t.dirs}
    assert _ci_tools() == on_path
    script = (REPO / ".ci" / "run").read_text()
    for tool in HOST_TOOLS.values():
        if tool.dirs:
            assert tool.package in script, f".ci/run does not install {tool.package}"


def test_every_tool_a_test_names_is_known() -> None:
    """Markers and require() calls in the tests name only tools of HOST_TOOLS."""
    pattern = re.compile(r"(?:needs_tool|host_tools\.require)\(([^)]*)\)")
    named: set[str] = set()
    for path in (REPO / "tests").glob("*.py"):
        if path.name in ("host_tools.py", "test_host_tools.py"):
            continue
        for args in pattern.findall(path.read_text()):
            named.update(re.findall(r'"([^"]+)"', args))
    assert "nft" in named
    assert named <= set(HOST_TOOLS), named - set(HOST_TOOLS)
