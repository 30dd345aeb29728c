"""One rule for the host tools the tests need: ``.ci/run`` installs them, and where one
is missing the tests that need it skip, naming it and its package.

Mark such a test (or module) ``@pytest.mark.needs_tool("nft")``, or call
:func:`require` from a fixture. Every tool has an entry in :data:`HOST_TOOLS`,
and ``.ci/run`` installs exactly those (``test_host_tools.py`` checks both).
A tool is looked for where firec itself looks: on ``PATH``, then in the sbin
directories (``FIREC_TEST_TOOL_DIRS``, a ``:``-separated list, replaces those;
the tests of this rule use it to play a host without a tool).

conftest.py imports the two pytest hooks from here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

__all__ = ["HOST_TOOLS", "HostTool", "find", "missing", "require"]

#: Where firec looks for a tool when it is not on ``PATH`` (nft, e2fsprogs).
SBIN_DIRS = ("/usr/sbin", "/sbin")
DIRS_VARIABLE = "FIREC_TEST_TOOL_DIRS"


@dataclass(frozen=True)
class HostTool:
    """A program some tests run, and the Debian package that has it."""

    package: str
    #: The executable to look for.
    executable: str
    #: Where it is, when it is not a command on ``PATH`` (CNI plugins).
    dirs: tuple[str, ...] = ()


HOST_TOOLS: dict[str, HostTool] = {
    "cc": HostTool("gcc", "cc"),
    "musl-gcc": HostTool("musl-tools", "musl-gcc"),
    "unshare": HostTool("util-linux", "unshare"),
    "dpkg-deb": HostTool("dpkg", "dpkg-deb"),
    "nft": HostTool("nftables", "nft"),
    "ip": HostTool("iproute2", "ip"),
    "mkfs.ext4": HostTool("e2fsprogs", "mkfs.ext4"),
    "debugfs": HostTool("e2fsprogs", "debugfs"),
    "setpriv": HostTool("util-linux", "setpriv"),
    "lz4": HostTool("lz4", "lz4"),
    "umoci": HostTool("umoci", "umoci"),
    "skopeo": HostTool("skopeo", "skopeo"),
    "gpg": HostTool("gpg", "gpg"),
    "gpgv": HostTool("gpgv", "gpgv"),
    "cni-plugins": HostTool(
        "containernetworking-plugins", "bridge", ("/usr/lib/cni", "/opt/cni/bin")
    ),
}
"""Every host tool a test needs, by the name the tests use."""


def _fallback_dirs() -> tuple[str, ...]:
    given = os.environ.get(DIRS_VARIABLE)
    if given is None:
        return SBIN_DIRS
    return tuple(d for d in given.split(os.pathsep) if d)


def find(name: str) -> str | None:
    """Where the host tool ``name`` (a key of :data:`HOST_TOOLS`) is, or ``None``."""
    tool = HOST_TOOLS[name]
    if tool.dirs:
        return shutil.which(tool.executable, path=os.pathsep.join(tool.dirs))
    found = shutil.which(tool.executable)
    if found is None and _fallback_dirs():
        found = shutil.which(tool.executable, path=os.pathsep.join(_fallback_dirs()))
    return found


def missing(*names: str) -> str | None:
    """Why a test needing ``names`` cannot run here (the first missing one), or ``None``."""
    for name in names:
        if name not in HOST_TOOLS:
            raise KeyError(
                f"unknown host tool {name!r}: add it to HOST_TOOLS in tests/host_tools.py "
                "and to the tools .ci/run installs"
            )
        if find(name) is None:
            tool = HOST_TOOLS[name]
            where = f" in {', '.join(tool.dirs)}" if tool.dirs else ""
            return (
                f"needs {name} ({tool.executable}{where}), which is not installed: "
                f"Debian package {tool.package} (.ci/run installs it)"
            )
    return None


def require(*names: str) -> None:
    """Skip the calling test (or fixture) when a host tool it needs is missing."""
    reason = missing(*names)
    if reason is not None:
        pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_tool(*names): the test runs host tools (see tests/host_tools.py); "
        "it skips, naming the missing one and its package, where one is not installed",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_tool"):
        unknown = [name for name in mark.args if name not in HOST_TOOLS]
        if unknown:
            pytest.fail(
                f"unknown host tool {unknown[0]!r}: add it to HOST_TOOLS in "
                "tests/host_tools.py and to the tools .ci/run installs",
                pytrace=False,
            )
        reason = missing(*mark.args)
        if reason is not None:
            pytest.skip(reason)
