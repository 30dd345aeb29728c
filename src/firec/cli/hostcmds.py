"""The host: ``doctor`` (is it ready?), ``install`` (a Firecracker release), ``version``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

import firec
from firec.api import versions
from firec.cli.output import ExitCode, download_progress, out, print_json, table
from firec.host import checks as host
from firec.host import install
from firec.host.kernel_checks import check_kernel

__all__ = ["doctor", "install_command", "version"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]


def _mark(check: host.Check) -> Text:
    if check.ok:
        return Text("ok", style="green")
    if check.required:
        return Text("MISSING", style="bold red")
    return Text("missing", style="yellow")


def doctor(
    as_json: JsonOption = False,
    kernel: Annotated[
        Path | None,
        typer.Option(
            help="Also check that this guest kernel has what firec's guest agent needs "
            "(vsock, virtio-mmio or PCI, virtio-blk, ext4, devtmpfs), from its config."
        ),
    ] = None,
) -> None:
    """Check that this host can run microVMs, and say how to fix what it lacks.

    Exits with 3 when something every microVM needs (KVM, Firecracker) is
    missing; the other checks are for some features only (jailer, network,
    images). With --kernel, the kernel's checks count too: its config is read
    from a config-* or .config beside it, or from inside it (IKCONFIG).
    """
    checks = host.check_host()
    if kernel is not None:
        checks += check_kernel(kernel)
    blocking = [c for c in checks if c.required and not c.ok]
    if as_json:
        print_json(
            {
                "ready": not blocking,
                "checks": [
                    {
                        "name": c.name,
                        "ok": c.ok,
                        "required": c.required,
                        "detail": c.detail,
                        "fix": c.fix,
                    }
                    for c in checks
                ],
            }
        )
    else:
        rows = [[_mark(c), c.name, c.detail, c.fix] for c in checks]
        out.print(table(["", "CHECK", "FOUND", "FIX"], rows))
        if blocking:
            needs = [c.name for c in blocking if not c.name.startswith("kernel")]
            lacks = [
                c.name.removeprefix("kernel").strip() or "a readable configuration"
                for c in blocking
                if c.name.startswith("kernel")
            ]
            said = [f"microVMs need {', '.join(needs)}"] if needs else []
            if lacks:
                said.append(f"the kernel lacks what firec's guest agent needs: {', '.join(lacks)}")
            out.print(f"\n[bold red]not ready[/]: {'; '.join(said)}; see FIX above.")
        else:
            optional = [c.name for c in checks if not c.ok]
            extra = ""
            if optional:
                extra = f" ({', '.join(optional)} missing: only some features need them)"
            out.print(f"\n[green]ready to run microVMs[/]{extra}")
    if blocking:
        raise typer.Exit(int(ExitCode.HOST_NOT_READY))


def install_command(
    release: Annotated[
        str, typer.Option("--version", help="The Firecracker release.")
    ] = install.PINNED_VERSION,
    sha256: Annotated[
        str | None,
        typer.Option(help="The archive's SHA-256 (default: the one the release publishes)."),
    ] = None,
    dest: Annotated[Path | None, typer.Option(help="Install into this directory instead.")] = None,
    base_url: Annotated[
        str, typer.Option(help="Where releases are downloaded from.")
    ] = install.GITHUB_RELEASES,
    as_json: JsonOption = False,
) -> None:
    """Download, verify and install a Firecracker release (firecracker and jailer).

    firec finds it there afterwards: no PATH change is needed.
    """
    with download_progress() as progress:
        installed = install.install_firecracker(
            release, dest=dest, base_url=base_url, progress=progress, sha256=sha256
        )
    if as_json:
        print_json(
            {
                "version": installed.version,
                "arch": installed.arch,
                "directory": str(installed.directory),
                "firecracker": str(installed.firecracker),
                "jailer": str(installed.jailer),
                "sha256": installed.sha256,
                "source": installed.source,
            }
        )
        return
    out.print(
        f"installed Firecracker {installed.version} ({installed.arch}) in {installed.directory}\n"
        f"  firecracker  {installed.firecracker}\n"
        f"  jailer       {installed.jailer}\n"
        f"  sha256       {installed.sha256} of {installed.source}",
        markup=False,
    )


def version(as_json: JsonOption = False) -> None:
    """firec's version, the Firecracker it finds, and the API versions it speaks."""
    binaries: dict[str, Any] = {}
    for name in ("firecracker", "jailer"):
        check = host.check_binary(name)
        binaries[name] = {"ok": check.ok, "detail": check.detail}
    data = {
        "firec": firec.__version__,
        "api_versions": [str(versions.OLDEST), str(versions.LATEST)],
        **binaries,
    }
    if as_json:
        print_json(data)
        return
    out.print(f"firec {firec.__version__}")
    out.print(f"speaks the Firecracker API of {versions.OLDEST} to {versions.LATEST}")
    for name, found in binaries.items():
        out.print(f"{name}: {found['detail']}", markup=False)
