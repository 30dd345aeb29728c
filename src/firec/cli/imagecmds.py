"""Images: ``firec image build`` (an ext4 root filesystem); kernels are in ``kernelcmds.py``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

# `firec kernel` lived here: importable from here too.
from firec.cli.kernelcmds import kernel_app
from firec.cli.output import EPILOG, out
from firec.errors import ConfigError
from firec.images import build_rootfs
from firec.images.agent import default_agent
from firec.images.defaults import sidecar_path

__all__ = ["build", "image_app", "kernel_app", "parse_command"]

image_app = typer.Typer(help="Root filesystem images.", no_args_is_help=True)


def parse_command(option: str, value: str | None) -> list[str] | None:
    """A command line given as a JSON array (``'["/bin/sh", "-c"]'``) or as shell words.

    Example::

        >>> parse_command("--cmd", '["echo", "a b"]'), parse_command("--cmd", "echo 'a b'")
        (['echo', 'a b'], ['echo', 'a b'])
    """
    if value is None:
        return None
    if value.lstrip().startswith("["):
        try:
            words = json.loads(value)
        except ValueError as exc:
            raise ConfigError(option, f"{value!r} is not a JSON array: {exc}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ConfigError(option, f"{value!r}: give a JSON array of strings")
        return words
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(option, f"{value!r}: {exc}") from None


@image_app.command("build", epilog=EPILOG)
def build(
    source: Annotated[
        Path,
        typer.Argument(help="A directory, an OCI image layout (dir or tar), or a docker save tar."),
    ],
    dest: Annotated[Path, typer.Argument(help="The ext4 image to write.")],
    size: Annotated[
        str | None, typer.Option(help="The image size (e.g. 512M); default: fitted to the content.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="The filesystem label.")] = None,
    agent: Annotated[
        Path | None,
        typer.Option(help="The firec-agent binary to install (default: the one firec carries)."),
    ] = None,
    no_agent: Annotated[
        bool, typer.Option("--no-agent", help="Install no agent (exec will not work).")
    ] = False,
    agent_as_service: Annotated[
        bool,
        typer.Option(
            "--agent-as-service",
            help="Start the agent as a systemd service (the image's init must be systemd) "
            "instead of as PID 1.",
        ),
    ] = False,
    entrypoint: Annotated[
        str | None,
        typer.Option(help='Replace the entrypoint: a JSON array (\'["/bin/sh","-c"]\') or words.'),
    ] = None,
    cmd: Annotated[str | None, typer.Option(help="Replace the cmd: a JSON array or words.")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Replace the environment. Repeatable."),
    ] = None,
    workdir: Annotated[str | None, typer.Option(help="Replace the working directory.")] = None,
    user: Annotated[str | None, typer.Option(help="Replace the user (name or uid[:gid]).")] = None,
) -> None:
    """Make an ext4 root filesystem image, without root and without mounting (mkfs.ext4 -d).

    The guest agent goes in at /.firec/firec-agent and, unless
    --agent-as-service, boots as PID 1: firec run passes
    init=/.firec/firec-agent. The image's entrypoint, cmd, env, working dir
    and user (from its config; for a directory, from the options) are the
    defaults of exec: they are written to /.firec/image.json inside the image
    and to DEST.json beside it.
    """
    if no_agent and agent is not None:
        raise ConfigError("--no-agent", "give either --agent PATH or --no-agent, not both")
    if no_agent and agent_as_service:
        raise ConfigError("--agent-as-service", "there is no agent to start (--no-agent)")
    for pair in env or ():
        if "=" not in pair:
            raise ConfigError("--env", f"{pair!r}: give KEY=VALUE")
    binary = None if no_agent else (agent if agent is not None else default_agent())
    image = build_rootfs(
        source,
        dest,
        size=size,
        label=label,
        agent=binary,
        agent_as_init=not agent_as_service,
        entrypoint=parse_command("--entrypoint", entrypoint),
        cmd=parse_command("--cmd", cmd),
        env=env,
        working_dir=workdir,
        user=user,
    )
    how = (
        "no agent"
        if binary is None
        else f"agent {'as a service' if agent_as_service else 'as init'}"
    )
    out.print(
        f"{image} ({image.stat().st_size >> 20} MiB, {how}); defaults in {sidecar_path(image)}",
        markup=False,
    )
