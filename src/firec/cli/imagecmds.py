"""Images: ``firec image build`` (an ext4 root filesystem), ``firec kernel extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firec.cli.output import EPILOG, out
from firec.images import build_rootfs, extract_vmlinux

__all__ = ["image_app", "kernel_app"]

image_app = typer.Typer(help="Root filesystem images.", no_args_is_help=True)
kernel_app = typer.Typer(help="Guest kernels.", no_args_is_help=True)


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


@kernel_app.command("extract", epilog=EPILOG)
def extract(
    bzimage: Annotated[Path, typer.Argument(help="A compressed kernel (/boot/vmlinuz-*).")],
    dest: Annotated[Path, typer.Argument(help="The ELF vmlinux to write (or a directory).")],
) -> None:
    """Turn a distribution bzImage into the ELF vmlinux Firecracker boots on x86-64."""
    vmlinux = extract_vmlinux(bzimage, dest)
    out.print(f"{vmlinux} ({vmlinux.stat().st_size >> 20} MiB)", markup=False)
