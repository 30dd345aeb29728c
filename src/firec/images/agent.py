"""firec's own files in an image: the guest agent, how it starts, and the image's defaults.

:func:`install_firec_files` adds to a finished ext4 image (with debugfs, so
nothing is mounted and the source tree is not touched):

* ``/.firec/image.json``: the image's defaults (:mod:`firec.images.defaults`);
* ``/.firec/firec-agent`` (mode 0755, owned by root), when an agent is given;
* as a service, ``/etc/systemd/system/firec-agent.service`` and its
  ``multi-user.target.wants`` link, for an image whose init is systemd.

As init (the default), nothing in the image changes how it boots: the record
says ``init: /.firec/firec-agent`` and ``firec run`` puts ``init=`` on the
kernel command line.

Example::

    >>> from firec.errors import ValidationError
    >>> from firec.images.agent import check_agent
    >>> try:
    ...     check_agent("/nonexistent")
    ... except ValidationError as exc:
    ...     print(exc.field, "|", exc.reason)
    agent | /nonexistent: no such file (give the firec-agent binary, or --no-agent)
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import tempfile
from pathlib import Path

from firec.errors import FirecError, ValidationError
from firec.images import e2fs
from firec.images.defaults import AGENT_PATH, IMAGE_DIR, IMAGE_JSON, ImageDefaults

__all__ = [
    "AGENT_UNIT",
    "check_agent",
    "default_agent",
    "extra_size",
    "has_systemd",
    "install_firec_files",
]

#: The systemd unit that starts the agent in ``service`` mode.
AGENT_UNIT = "/etc/systemd/system/firec-agent.service"
_WANTS = "/etc/systemd/system/multi-user.target.wants"
_UNIT_TEXT = f"""\
[Unit]
Description=firec guest agent
Documentation=https://github.com/firec/firec
After=local-fs.target

[Service]
ExecStart={AGENT_PATH}
Restart=always

[Install]
WantedBy=multi-user.target
"""
_SYSTEMD = ("usr/lib/systemd/systemd", "lib/systemd/systemd")
_MAX_HOPS = 40


def default_agent() -> Path:
    """The agent binary this install of firec carries: ``firec.agent.agent_binary()``.

    Raises:
        FirecError: firec has no agent here (the message names ``--agent`` and
            ``--no-agent``).
    """
    try:
        module = importlib.import_module("firec.agent")
    except ModuleNotFoundError as exc:
        if exc.name not in ("firec.agent", "firec"):
            raise
        raise FirecError(
            "this install of firec has no guest agent (no firec.agent module): give one with "
            "--agent PATH, or build the image without it with --no-agent"
        ) from exc
    find = getattr(module, "agent_binary", None)
    if find is None:
        raise FirecError(
            "firec.agent has no agent_binary(): give the agent with --agent PATH, or --no-agent"
        )
    try:
        return Path(find())
    except FirecError as exc:
        raise FirecError(f"{exc}; or give the agent with --agent PATH, or use --no-agent") from exc


def check_agent(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a readable ELF file, else a :class:`ValidationError` naming ``agent``."""
    agent = Path(path)
    try:
        st = agent.stat()
        with agent.open("rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ValidationError(
            "agent", f"{agent}: no such file (give the firec-agent binary, or --no-agent)"
        ) from None
    except OSError as exc:
        raise ValidationError("agent", f"{agent}: cannot read it: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError("agent", f"{agent}: not a regular file")
    if head != b"\x7fELF":
        raise ValidationError("agent", f"{agent}: not an ELF executable (the firec-agent binary)")
    return agent


def has_systemd(root: Path) -> bool:
    """Whether the image tree at ``root`` has systemd (symlinks followed inside the image)."""
    return any(_exists_in(root, candidate) for candidate in _SYSTEMD)


def _exists_in(root: Path, rel: str) -> bool:
    """Whether ``rel`` names a file in the tree at ``root``, its symlinks resolved inside it."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        try:
            st = here.lstat()
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_HOPS:
                return False
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return True


def extra_size(agent: Path | None, service: bool) -> tuple[int, int]:
    """The 4 KiB blocks and inodes firec's files add to an image."""
    blocks, inodes = 2, 2  # /.firec and image.json
    if agent is not None:
        blocks += -(-agent.stat().st_size // 4096) + 1
        inodes += 1
    if service:
        blocks, inodes = blocks + 3, inodes + 3
    return blocks, inodes


def install_firec_files(
    image: Path,
    tree: Path,
    defaults: ImageDefaults,
    agent: Path | None,
) -> None:
    """Write ``/.firec`` (and a systemd unit, in service mode) into the ext4 ``image``.

    Args:
        image: the ext4 file, finished.
        tree: the directory it was made from (to know what is already there).
        defaults: the record to write; its ``agent_mode`` says how the agent starts.
        agent: the agent binary to copy in, or ``None``.
    """
    q = e2fs.debugfs_quote
    commands: list[str] = []

    def present(path: str) -> bool:
        return os.path.lexists(tree / path.lstrip("/"))

    def directory(path: str) -> None:
        if not (tree / path.lstrip("/")).is_dir():
            commands.extend([f"mkdir {q(path)}", f"sif {q(path)} uid 0", f"sif {q(path)} gid 0"])

    def put(host: Path, path: str, mode: int) -> None:
        if present(path):
            commands.append(f"rm {q(path)}")
        commands.extend([f"write {q(str(host))} {q(path)}", f"sif {q(path)} mode 0{mode:o}"])
        commands.extend([f"sif {q(path)} uid 0", f"sif {q(path)} gid 0"])

    with tempfile.TemporaryDirectory(prefix="firec-image-") as work:
        record = Path(work) / "image.json"
        record.write_text(json.dumps(defaults.to_json(), indent=2) + "\n")
        directory(IMAGE_DIR)
        put(record, IMAGE_JSON, stat.S_IFREG | 0o644)
        if agent is not None:
            put(agent, AGENT_PATH, stat.S_IFREG | 0o755)
        if defaults.agent_mode == "service":
            unit = Path(work) / "firec-agent.service"
            unit.write_text(_UNIT_TEXT)
            for path in ("/etc", "/etc/systemd", "/etc/systemd/system", _WANTS):
                directory(path)
            put(unit, AGENT_UNIT, stat.S_IFREG | 0o644)
            link = f"{_WANTS}/firec-agent.service"
            if present(link):
                commands.append(f"rm {q(link)}")
            commands.append(f"symlink {q(link)} {q(AGENT_UNIT)}")
        try:
            e2fs.run_debugfs(image, commands, write=True)
        except FirecError as exc:
            raise FirecError(f"cannot add firec's files to {image}: {exc}") from exc
