"""Compiling ``firec-agent`` from its C sources (``agent/`` at the top of the source tree).

Used by the build hook (``hatch_build.py``), which loads this file by path
before firec is installed: so it imports nothing of firec, only the standard
library. musl (Debian's ``musl-tools``: ``musl-gcc -static -Os``) makes the
smallest binary; glibc's ``gcc -static`` is the fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["AGENT_NAME", "BuildError", "build_agent", "compilers"]

AGENT_NAME = "firec-agent"
#: The largest binary the build accepts (the agent's size budget).
MAX_SIZE = 1 << 20
_FLAGS = ["-static", "-Os", "-s", "-std=gnu11", "-Wall", "-Wextra", "-Wno-format-truncation"]
_FLAGS_GLIBC = [*_FLAGS, "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections"]


class BuildError(RuntimeError):
    """The agent could not be compiled (the message says what to install)."""


def compilers() -> list[tuple[str, list[str]]]:
    """The compilers to try, best first: ``(path, flags)``; ``FIREC_AGENT_CC`` names one."""
    chosen = os.environ.get("FIREC_AGENT_CC")
    if chosen:
        return [(chosen, _FLAGS if "musl" in Path(chosen).name else _FLAGS_GLIBC)]
    found = []
    musl = shutil.which("musl-gcc")
    if musl:
        found.append((musl, _FLAGS))
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc:
        found.append((gcc, _FLAGS_GLIBC))
    return found


def build_agent(sources: Path, destination: Path) -> Path:
    """Compile the agent in ``sources`` into ``destination`` (a file path); that path.

    Raises :class:`BuildError` naming the Debian packages to install when no
    compiler works, and when the binary is over its 1 MiB budget.
    """
    files = sorted(str(p) for p in Path(sources).glob("*.c"))
    if not files:
        raise BuildError(f"no C sources of firec-agent in {sources}")
    candidates = compilers()
    if not candidates:
        raise BuildError(
            "firec-agent needs a C compiler to build: install musl-tools (best: the smallest "
            "static binary) or gcc, e.g. `apt-get install musl-tools gcc`"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for compiler, flags in candidates:
        with tempfile.TemporaryDirectory(prefix="firec-agent-build-") as scratch:
            out = Path(scratch) / AGENT_NAME
            result = subprocess.run(
                [compiler, *flags, "-o", str(out), *files],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not out.exists():
                errors.append(f"{compiler}: {result.stderr.strip()[-2000:]}")
                continue
            size = out.stat().st_size
            if size > MAX_SIZE:
                errors.append(f"{compiler}: the binary is {size} bytes, over the 1 MiB budget")
                continue
            staged = destination.with_name(f".{destination.name}.tmp")
            shutil.copyfile(out, staged)
            staged.chmod(0o755)
            staged.replace(destination)
            return destination
    raise BuildError(
        "firec-agent could not be built (install musl-tools for a static musl build, or "
        "gcc with its static libc, libc6-dev):\n" + "\n".join(errors)
    )
