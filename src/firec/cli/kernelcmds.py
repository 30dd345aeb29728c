"""Guest kernels: ``firec kernel fetch`` (download one) and ``firec kernel extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firec.cli.output import EPILOG, download_progress, out, print_json
from firec.host import debian, kernels
from firec.images import extract_vmlinux

__all__ = ["extract", "fetch", "kernel_app"]

kernel_app = typer.Typer(help="Guest kernels.", no_args_is_help=True)


@kernel_app.command("fetch", epilog=EPILOG)
def fetch(
    url: Annotated[
        str | None,
        typer.Option(
            help="Download this kernel instead (vmlinux, bzImage or .deb); needs --sha256."
        ),
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="The SHA-256 of what --url serves.")] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            help="The directory to put it in (default: ~/.local/share/firec/kernels/NAME)."
        ),
    ] = None,
    suite: Annotated[
        str, typer.Option(help="The Debian suite to take the cloud kernel from.")
    ] = kernels.DEFAULT_SUITE,
    mirror: Annotated[
        str, typer.Option(help="The Debian archive to download from.")
    ] = debian.DEBIAN_MIRROR,
    keyring: Annotated[
        Path | None,
        typer.Option(help="Check the index's signature against this keyring instead of Debian's."),
    ] = None,
    verify_index: Annotated[
        bool,
        typer.Option(
            "--verify-index/--no-verify-index",
            help="Check the Debian index's signature with gpgv (the default); --no-verify-index "
            "trusts the mirror's HTTPS alone.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
) -> None:
    """Download a guest kernel Firecracker boots, checked against its SHA-256.

    By default: Debian's cloud kernel (linux-image-cloud-amd64, Linux 6.1 in
    bookworm). It is found through the suite's InRelease, whose signature gpgv
    checks against /usr/share/keyrings/debian-archive-keyring.gpg; the
    Packages index is checked against the SHA-256 that file lists, and the
    package against the index. Without gpgv or that keyring the command
    refuses, unless --no-verify-index says to trust the HTTPS connection
    alone. The kernel is written as an ELF vmlinux, with its config-* beside
    it (for firec doctor --kernel).

    With --url and --sha256: any other kernel (a vmlinux, a bzImage or a
    Debian kernel package), e.g. one of Firecracker's CI kernels.
    """
    with download_progress() as progress:
        kernel = kernels.fetch_kernel(
            url=url,
            sha256=sha256,
            dest=dest,
            suite=suite,
            mirror=mirror,
            verify_index=verify_index,
            keyring=keyring,
            progress=progress,
        )
    if as_json:
        print_json(
            {
                "directory": str(kernel.directory),
                "vmlinux": str(kernel.vmlinux),
                "config": str(kernel.config) if kernel.config else None,
                "source": kernel.source,
                "sha256": kernel.sha256,
                "package": kernel.package,
                "index": kernel.index,
                "index_signed": kernel.index_signed,
            }
        )
        return
    lines = [f"vmlinux  {kernel.vmlinux}"]
    if kernel.config is not None:
        lines.append(f"config   {kernel.config}")
    lines.append(f"sha256   {kernel.sha256} of {kernel.source}")
    if kernel.package is not None:
        trust = "signature checked" if kernel.index_signed else "signature NOT checked"
        lines.append(f"package  {kernel.package}, from {kernel.index} ({trust})")
    out.print("\n".join(lines), markup=False)


@kernel_app.command("extract", epilog=EPILOG)
def extract(
    bzimage: Annotated[Path, typer.Argument(help="A compressed kernel (/boot/vmlinuz-*).")],
    dest: Annotated[Path, typer.Argument(help="The ELF vmlinux to write (or a directory).")],
) -> None:
    """Turn a distribution bzImage into the ELF vmlinux Firecracker boots on x86-64."""
    vmlinux = extract_vmlinux(bzimage, dest)
    out.print(f"{vmlinux} ({vmlinux.stat().st_size >> 20} MiB)", markup=False)
