"""``firec run IMAGE -- CMD``: boot an image, run a command in it, remove the VM.

Like ``docker run --rm``: the VM boots its image with firec's agent (as
init: ``firec image build`` recorded ``init=``), the command runs through
the agent with its output streamed here, ``firec`` exits with the command's
status (128+N for signal N), and the VM and everything it had are removed;
with ``-d`` the VM runs on afterwards (``firec exec``, ``firec cp``,
``firec rm``). The command is the image's entrypoint with the one given (or
the image's cmd), in its environment, directory and user, as the image
recorded them (:mod:`firec.images.defaults`).

Example::

    >>> is_kernel(Path("/nonexistent")), is_image(Path("/nonexistent"), command=True, kernel=None)
    (False, False)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from firec.cli.guest import command_env, image_defaults, stream_command
from firec.cli.output import ExitCode, err, fail
from firec.cli.start import StartedVm
from firec.errors import AgentConnectionError, FirecError
from firec.host.kernels import kernels_dir, read_kernel
from firec.host.registry import Registry, reap
from firec.images.defaults import sidecar_path
from firec.vm.config import Config
from firec.vm.guest_agent import AgentSettings, new_token

__all__ = [
    "AGENT_READY_TIMEOUT",
    "default_kernel",
    "is_image",
    "is_kernel",
    "run_in_vm",
    "with_agent",
]

#: Where an ext2/3/4 superblock has its magic number (0xEF53, little-endian).
_EXT4_MAGIC_AT = 1024 + 56
#: Seconds a booting guest gets for its agent to answer.
AGENT_READY_TIMEOUT = 60.0


def is_kernel(path: Path) -> bool:
    """Whether ``path`` is an ELF file (a kernel), rather than an image."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def is_image(path: Path, *, command: bool, kernel: Path | None) -> bool:
    """Whether ``firec run PATH`` names an image rather than a kernel.

    A file that is no ELF is an image when a command or ``--kernel`` goes with
    it, when ``firec image build`` recorded it (``<image>.json``), or when it
    holds an ext4 file system; anything else stays a kernel, for Firecracker
    to judge.
    """
    if not path.is_file() or is_kernel(path):
        return False
    if command or kernel is not None or sidecar_path(path).is_file():
        return True
    try:
        with path.open("rb") as f:
            f.seek(_EXT4_MAGIC_AT)
            return f.read(2) == b"\x53\xef"
    except OSError:
        return False


def default_kernel(given: Path | None, image: Path) -> Path:
    """The kernel to boot ``image`` with: ``--kernel``, else the one ``firec kernel fetch`` got."""
    if given is not None:
        return given
    fetched = read_kernel(kernels_dir())
    if fetched is None:
        fail(
            ExitCode.USAGE,
            f"{image} is an image, not a kernel: give the kernel to boot it with (--kernel)",
            "`firec kernel fetch` downloads one that firec then uses by default",
        )
    return fetched.vmlinux


def with_agent(config: Config) -> Config:
    """``config`` with the agent's settings: a fresh token, unless it has settings already."""
    if config.agent is not None:
        return config
    return config.replace(agent=AgentSettings(token=new_token()))


def run_in_vm(
    registry: Registry,
    started: StartedVm,
    command: list[str],
    *,
    detach: bool,
    interactive: bool,
    terminal: bool,
) -> None:
    """Run ``command`` in the started VM; exit with its status; remove the VM unless ``detach``."""
    machine, vm_id = started.machine, started.record.vm_id
    try:
        defaults = image_defaults(machine.config)
        argv = defaults.argv(command or None) if defaults is not None else command
        if not argv:
            fail(
                ExitCode.USAGE,
                "no command to run: give one after --; the image records none",
                "firec run IMAGE -- CMD ARGS",
            )
        try:
            machine.wait_ready(timeout=AGENT_READY_TIMEOUT)
        except AgentConnectionError as exc:
            fail(
                ExitCode.VM_FAILED,
                str(exc),
                "the guest must run firec's agent: boot an image `firec image build` made",
            )
        code = stream_command(
            machine,
            argv,
            env=command_env(defaults, []),
            cwd=defaults.working_dir if defaults else None,
            user=defaults.user if defaults else None,
            interactive=interactive,
            terminal=terminal,
        )
    finally:
        if detach:
            machine.close_agent()
            machine.client.close()
        else:
            _remove(registry, started)
    if detach:
        err.print(f"[dim]firec: microVM {vm_id} runs on (firec rm -f {vm_id} removes it)[/]")
    raise typer.Exit(code)


def _remove(registry: Registry, started: StartedVm) -> None:
    """Stop the VM and remove everything it had, its record included."""
    vm_id = started.record.vm_id
    try:
        started.machine.delete()
    finally:
        with registry.lock(vm_id), contextlib.suppress(FirecError):
            latest = registry.load(vm_id)
            if latest is not None:
                reap(registry, latest)
