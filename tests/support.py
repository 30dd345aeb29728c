"""Plain helpers shared by firec's tests (the fixtures built on them are in ``conftest.py``).

No tests here: the executables that stand in for Firecracker and the jailer,
the real binaries named by ``FIRECRACKER_BIN`` and ``JAILER_BIN``, a config
builder for the tiny test guest, the checks that a VM left nothing behind, a
scratch host for bad input (where nothing may be spawned or made), and a
mock Firecracker API for the clients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import pytest

import firec
from firec.api.versions import Version
from firec.host.registry import Registry
from firec.vm._launch import Launch
from firec.vm.builders import JailerBuilder
from firec.vm.config import Builder, Config

if TYPE_CHECKING:
    from click.testing import Result

# -- the binaries ---------------------------------------------------------------------------


def firecracker_bin() -> str | None:
    """The real Firecracker named by ``FIRECRACKER_BIN``, if any."""
    return os.environ.get("FIRECRACKER_BIN") or None


def require_firecracker() -> str:
    """The real Firecracker named by ``FIRECRACKER_BIN``; skips the test when there is none."""
    path = firecracker_bin()
    if path is None:
        pytest.skip("FIRECRACKER_BIN is not set: no real Firecracker to run this test against")
    return path


def require_jailer() -> Path:
    """The real jailer named by ``JAILER_BIN``; skips the test when there is none."""
    path = os.environ.get("JAILER_BIN")
    if not path:
        pytest.skip("JAILER_BIN is not set: no real jailer to run this test with")
    return Path(path)


def module_wrapper(path: Path, module: str, *args: str) -> Path:
    """An executable ``path`` running ``python -m module args...`` (with this interpreter)."""
    flags = "".join(f"{arg} " for arg in args)
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} {flags}"$@"\n')
    path.chmod(0o755)
    return path


def emulator_wrapper(directory: Path, version: str | None = None) -> Path:
    """An executable in ``directory`` that runs firec's emulator (playing ``version``, if given).

    Its name is ``firecracker-emulator`` (``firecracker-emulator-<version>``): a
    jail made for it is named after it.
    """
    if version is None:
        return module_wrapper(directory / "firecracker-emulator", "firec.testing.emulator")
    pinned = directory / f"firecracker-emulator-{version}"
    return module_wrapper(pinned, "firec.testing.emulator", "--emulate-version", version)


def jailer_wrapper(directory: Path) -> Path:
    """An executable ``jailer-emulator`` in ``directory`` that runs firec's emulated jailer."""
    return module_wrapper(directory / "jailer-emulator", "firec.testing.jailer")


@cache
def binary_version(binary: Path) -> Version:
    """What ``<binary> --version`` says (``Firecracker v1.14.2``), read without firec."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Firecracker v(\S+)", out)
    assert match, out
    return Version.parse(match[1])


# -- configs --------------------------------------------------------------------------------


def guest_builder(
    vm_id: str | None, vmm_binary: Path, guest_kernel: Path, directory: Path, mem_mib: int = 64
) -> Builder:
    """A config builder for the test guest, keeping firec's files under ``directory``."""
    return (
        Config.builder(vm_id, guest_kernel)
        .firecracker_binary(vmm_binary)
        .workdir(directory / "vms")
        .machine_cfg()
        .mem_size_mib(mem_mib)
        .build()
    )


def in_jail(
    builder: Builder,
    jailer_binary: Path,
    exec_file: Path,
    directory: Path,
    *,
    uid: int = 1234,
    gid: int = 1235,
) -> JailerBuilder:
    """``builder`` run by ``jailer_binary`` as ``uid``:``gid``, chroots under ``directory/jail``."""
    return (
        builder.jailer_cfg()
        .jailer_binary(jailer_binary)
        .exec_file(exec_file)
        .chroot_base_dir(directory / "jail")
        .uid(uid)
        .gid(gid)
    )


# -- what a VM leaves ---------------------------------------------------------------------


def zombie(pid: int) -> bool:
    """Whether process ``pid`` is a zombie (or already gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def assert_nothing_left(launch: Launch, pid: int | None) -> None:
    """Nothing of the VM survives: process, socket, firec's directory, jail, cgroups, fifos."""
    if pid is not None:
        assert not Path(f"/proc/{pid}").exists() or zombie(pid), f"process {pid} still runs"
    assert not launch.socket_path.exists(), launch.socket_path
    assert not launch.vm_dir.exists(), launch.vm_dir
    if launch.jail is not None:
        assert not launch.jail.base.exists(), launch.jail.base
    for cgroup in launch.cgroups:
        assert not cgroup.exists(), cgroup
    if launch.log_is_fifo:
        assert not launch.log_path.exists(), launch.log_path


def console_text(machine: firec.Machine | firec.AsyncMachine, want: str) -> str:
    """The console file once ``want`` is in it (the guest prints asynchronously)."""
    assert machine.console_path is not None
    deadline = time.monotonic() + 10
    while True:
        text = machine.console_path.read_text()
        if want in text or time.monotonic() > deadline:
            return text
        time.sleep(0.01)


# -- a small disk -------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its filesystem is full (ENOSPC); return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


# -- bad input: nothing spawned, nothing left -----------------------------------------------


def spy_binary(path: Path, log: Path) -> Path:
    """An executable that records that it ran (its arguments), and fails."""
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    path.chmod(0o755)
    return path


def children() -> list[int]:
    """The live child processes of this test process.

    Not multiprocessing's resource tracker: the first test to use a process
    pool starts it, and it stays for the rest of the session by design.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if b"multiprocessing.resource_tracker" in command:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@dataclasses.dataclass(frozen=True)
class SpyHost:
    """A scratch host for bad input: real files for the valid part of a config, a spy
    standing in for Firecracker and the jailer, and the places where nothing may appear.

    Attributes:
        root: the scratch directory.
        kernel: a file that passes for a kernel.
        disk: a file that passes for a disk image.
        spy: the spy binary (:func:`spy_binary`).
        spawned: the file the spy writes when it runs: there must be none.
        workdir: the VMs' work directory: it must stay empty.
        state: the command line's state directory (``FIREC_STATE_DIR``): no record may appear.
    """

    root: Path
    kernel: Path
    disk: Path
    spy: Path
    spawned: Path
    workdir: Path
    state: Path

    @classmethod
    def make(cls, root: Path) -> Self:
        """The scratch host in directory ``root``: its files made, nothing else."""
        kernel = root / "vmlinux"
        kernel.write_bytes(b"\x7fELF" + bytes(60))
        disk = root / "disk.img"
        disk.write_bytes(bytes(4096))
        spawned = root / "spawned.log"
        spy = spy_binary(root / "firecracker", spawned)
        return cls(root, kernel, disk, spy, spawned, root / "vms", root / "state")

    def firec_run(self, *options: str, kernel: str | None = None, leave_out: str = "") -> Result:
        """``firec run`` of this host's kernel (or ``kernel``), workdir and spies, with ``options``.

        The spy is given as ``--firecracker-bin`` and ``--jailer-bin``, but for
        the one named ``leave_out``.
        """
        args = ["run", str(self.kernel) if kernel is None else kernel]
        args += ["--workdir", str(self.workdir)]
        for option in ("--firecracker-bin", "--jailer-bin"):
            if option != leave_out:
                args += [option, str(self.spy)]
        from typer.testing import CliRunner

        from firec.cli import app

        return CliRunner().invoke(app, [*args, *options], env={"FIREC_STATE_DIR": str(self.state)})

    def assert_nothing_made(self) -> None:
        """No VMM was spawned; the workdir, the registry and the process table hold nothing new."""
        assert not self.spawned.exists(), f"spawned: {self.spawned.read_text()}"
        assert not self.workdir.exists() or list(self.workdir.iterdir()) == []
        assert Registry(self.state).records() == []
        vms = self.state / "vms"
        assert not vms.exists() or list(vms.iterdir()) == []
        assert children() == [], "a child process is left"


# -- a mock Firecracker API -----------------------------------------------------------------


class Recorder:
    """A mock Firecracker of one version for :class:`httpx.MockTransport`: records what is sent.

    ``GET /version`` and ``GET /`` are answered as that version (and ``state``, the
    instance's state: ``"Running"`` unless a test sets it); everything else with 204.
    """

    def __init__(self, version: str) -> None:
        self.version = version
        self.state = "Running"
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/version":
            return httpx.Response(200, json={"firecracker_version": self.version})
        if request.method == "GET" and request.url.path == "/":
            info = {"id": "x", "state": self.state, "vmm_version": self.version}
            return httpx.Response(200, json={**info, "app_name": "Firecracker"})
        return httpx.Response(204)

    def sent(self) -> list[str]:
        """Each request sent, as ``"METHOD /path"``."""
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def bodies(self) -> list[Any]:
        """The JSON body of each request sent (``None`` for none)."""
        return [json.loads(r.content) if r.content else None for r in self.requests]
