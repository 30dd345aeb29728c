"""firec-agent as built: static, small, its command line; the build's errors; the docs' examples."""

from __future__ import annotations

import doctest
import importlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from firec.agent import agent_binary
from firec.agent._build import MAX_SIZE, BuildError, build_agent
from firec.errors import FirecError
from tests.agent_support import ROOT, run_agent

PT_INTERP, PT_DYNAMIC = 3, 2


def _program_headers(path: Path) -> list[int]:
    """The types of an ELF64 file's program headers."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]


def _assert_static_and_small(path: Path) -> None:
    headers = _program_headers(path)
    assert PT_INTERP not in headers and PT_DYNAMIC not in headers, "not statically linked"
    assert path.stat().st_size <= MAX_SIZE, f"{path.stat().st_size} bytes: over 1 MiB"


def test_the_agent_is_static_small_and_says_its_version(agent_bin: Path) -> None:
    _assert_static_and_small(agent_bin)
    result = subprocess.run([agent_bin, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == "firec-agent 0.1.0 (protocol 1)\n"
    assert (
        "--listen ADDR"
        in subprocess.run([agent_bin, "--help"], capture_output=True, text=True, check=True).stdout
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--listen"], "--listen needs a value"),
        (["--listen", "tcp:1"], "cannot listen on tcp:1: Invalid argument"),
        (["--listen", "unix:/no/such/dir/a.sock"], "cannot listen on unix:/no/such/dir/a.sock"),
        (["--root", "/no/such/root"], "--root /no/such/root: No such file or directory"),
        (["--token-file", "/no/such/token"], "--token-file /no/such/token: No such file"),
    ],
)
def test_bad_arguments_exit_2_saying_why(agent_bin: Path, args: list[str], says: str) -> None:
    result = subprocess.run(
        [agent_bin, "--service", *args], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 2
    assert says in result.stderr


@pytest.mark.needs_tool("cc")
def test_the_gcc_fallback_builds_a_static_agent_too(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcc", "cc", "as", "ld"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("FIREC_AGENT_CC", None)
    script = (
        "import sys; from pathlib import Path; from firec.agent._build import build_agent, "
        "compilers; assert all('musl' not in c for c, _ in compilers()); "
        "print(build_agent(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    out = tmp_path / "firec-agent"
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "agent"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _assert_static_and_small(out)
    version = subprocess.run([out, "--version"], capture_output=True, text=True, check=True)
    assert "protocol 1" in version.stdout
    # users by name: the agent reads /etc/passwd and /etc/group itself (glibc's lookups
    # would load NSS modules into the static binary, which died on the first name)
    with run_agent(out, tmp_path) as agent, agent.client() as client:
        assert client.exec(["id", "-un"], user="nobody").stdout == b"nobody\n"
        assert client.exec(["id", "-u"], user="root").stdout == b"0\n"


def test_no_compiler_is_a_clear_error_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FIREC_AGENT_CC", raising=False)
    with pytest.raises(BuildError, match=r"install musl-tools .* or gcc"):
        build_agent(ROOT / "agent", tmp_path / "firec-agent")
    assert not (tmp_path / "firec-agent").exists()
    with pytest.raises(BuildError, match="no C sources"):
        build_agent(tmp_path, tmp_path / "firec-agent")


def test_a_compiler_that_fails_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREC_AGENT_CC", "/bin/false")
    with pytest.raises(BuildError, match="firec-agent could not be built"):
        build_agent(ROOT / "agent", tmp_path / "firec-agent")
    assert list(tmp_path.iterdir()) == []


def test_agent_binary_finds_it_or_says_how_to_get_it(
    agent_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREC_AGENT_BIN", str(agent_bin))
    assert agent_binary() == agent_bin
    monkeypatch.setenv("FIREC_AGENT_BIN", str(tmp_path / "nothing"))
    with pytest.raises(FirecError, match=r"FIREC_AGENT_BIN=.*no executable firec-agent there"):
        agent_binary()


def test_built_binaries_are_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "src/firec/agent/bin/firec-agent"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "src/firec/agent/bin/ is not in .gitignore"


@pytest.mark.parametrize(
    "module",
    [
        "firec.agent.protocol",
        "firec.agent.results",
        "firec.agent.binary",
        "firec.agent.identity",
        "firec.errors",
    ],
)
def test_the_docstring_examples_run(
    module: str, agent_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREC_AGENT_BIN", str(agent_bin))
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 or module == "firec.errors"
    assert result.failed == 0
