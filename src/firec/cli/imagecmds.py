"""Images: ``firec image build`` (an ext4 root filesystem); kernels are in ``kernelcmds.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# `firec kernel` lived here: importable from here too.
from firec.cli.kernelcmds import kernel_app
from firec.cli.output import EPILOG, out
from firec.images import build_rootfs

__all__ = ["image_app", "kernel_app"]

image_app = typer.Typer(help="Root filesystem images.", no_args_is_help=True)


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
) -> None:
    """Make an ext4 root filesystem image, without root and without mounting (mkfs.ext4 -d)."""
    image = build_rootfs(source, dest, size=size, label=label)
    out.print(f"{image} ({image.stat().st_size >> 20} MiB)", markup=False)
