"""Whether this host can run a microVM, said the way ``firec doctor`` says it.

When a Firecracker binary, the jailer's privileges or a usable ``/dev/kvm``
is missing, the commands that start microVMs exit with
:attr:`~firec.cli.output.ExitCode.HOST_NOT_READY` (3), naming each failed
check of :mod:`firec.host.checks` and its fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from firec.cli.output import ExitCode, fail
from firec.errors import FirecError
from firec.host import checks as host

__all__ = ["binary_or_doctor", "check_jailer_privileges", "explain_host", "not_ready"]


def not_ready(checks: list[host.Check], what: str = "") -> NoReturn:
    """Exit HOST_NOT_READY naming each failed check and its fix, as ``firec doctor`` would."""
    lines = [f"{c.name}: {c.detail}" for c in checks]
    fixes = [f"{c.name}: {c.fix}" for c in checks if c.fix]
    fail(
        ExitCode.HOST_NOT_READY,
        (f"{what}\n" if what else "")
        + "this host cannot run microVMs yet:\n  "
        + "\n  ".join(lines),
        "\n  ".join([*fixes, "`firec doctor` checks everything"]),
    )


def binary_or_doctor(explicit: Path | None, name: str) -> Path:
    """The binary to run, or exit HOST_NOT_READY with what ``firec doctor`` says is missing."""
    if explicit is not None:
        if not explicit.is_file() or not os.access(explicit, os.X_OK):
            fail(ExitCode.USAGE, f"--{name}-bin {explicit} is not an executable file")
        return explicit
    check = host.check_binary(name)
    path, _ = host.find_binary(name)
    if check.ok and path is not None:
        return path
    kvm = host.check_kvm()
    not_ready([check] if kvm.ok else [kvm, check])


def explain_host(exc: FirecError) -> None:
    """When a VM did not come up, say whether KVM is the reason (then exit HOST_NOT_READY)."""
    kvm = host.check_kvm()
    if not kvm.ok:
        not_ready([kvm], str(exc))


def check_jailer_privileges() -> None:
    """``--jailer`` needs root: refuse before anything is made, saying why and what to do."""
    check = host.check_jailer_privileges()
    if not check.ok:
        fail(
            ExitCode.HOST_NOT_READY,
            f"--jailer: {check.detail}",
            "run it as root (sudo firec run --jailer ...), or leave out --jailer to run "
            "Firecracker without the jailer",
        )
