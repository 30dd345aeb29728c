"""The build hook: compiles firec-agent (``agent/*.c``) into the wheel.

A wheel (``pip install .``) carries the binary at ``firec/agent/bin/firec-agent``;
an editable install (``pip install -e .``) compiles it in place, into
``src/firec/agent/bin/`` (never committed). The compiling itself is
``src/firec/agent/_build.py``, loaded by path: firec is not installed yet.
``FIREC_AGENT_SKIP_BUILD=1`` builds without the agent (firec then says so
when it is needed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

IN_WHEEL = "firec/agent/bin/firec-agent"


def _builder(root: Path) -> Any:
    path = root / "src" / "firec" / "agent" / "_build.py"
    spec = importlib.util.spec_from_file_location("_firec_agent_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class AgentBuildHook(BuildHookInterface):
    """Compile the agent for the wheel being built."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("FIREC_AGENT_SKIP_BUILD") == "1":
            print("firec: FIREC_AGENT_SKIP_BUILD=1: building without firec-agent", file=sys.stderr)
            return
        root = Path(self.root)
        builder = _builder(root)
        try:
            if version == "editable":
                builder.build_agent(root / "agent", root / "src" / IN_WHEEL.replace("/", os.sep))
                return
            self._scratch = tempfile.mkdtemp(prefix="firec-agent-wheel-")
            binary = builder.build_agent(root / "agent", Path(self._scratch) / "firec-agent")
        except builder.BuildError as exc:
            raise RuntimeError(f"cannot build firec-agent: {exc}") from None
        build_data["force_include"][str(binary)] = IN_WHEEL
        build_data["pure_python"] = False
        # the binary runs under any Python: only the platform matters
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
