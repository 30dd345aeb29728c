"""``firec run`` on a host that cannot run the VM as asked: the documented exit code and the fix.

* No usable KVM: exit 3 (host not ready), whether Firecracker refuses the
  boot over the API or exits (``--boot-method config-file``). The host is
  played with ``FIREC_KVM_DEVICE``, which both firec's host checks and its
  Firecracker emulator use in place of ``/dev/kvm``.
* ``--jailer`` without root: exit 3, saying that the jailer needs root (the
  capabilities it lacks) and what to do, before anything is made.

The cases of another user run the command line as ``nobody`` (``setpriv``),
and need root to do so.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firec.cli import app
from firec.cli.output import ExitCode
from firec.host.registry import Registry
from firec.testing import emulator_binary

runner = CliRunner()

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
AS_ROOT_WITHOUT_CAPABILITIES = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


# -- no KVM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("boot_method", ["api", "config-file"])
def test_no_kvm_exits_3_naming_the_fix(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch, boot_method: str
) -> None:
    kvm = short_tmp / "no-kvm"  # a host without KVM
    state = short_tmp / "state"
    monkeypatch.setenv("FIREC_KVM_DEVICE", str(kvm))
    monkeypatch.setenv("FIREC_STATE_DIR", str(state))
    result = runner.invoke(
        app,
        [
            "run",
            "--test-guest",
            "--firecracker-bin",
            str(emulator_binary()),
            "--workdir",
            str(short_tmp / "vms"),
            "--boot-method",
            boot_method,
        ],
    )
    text = " ".join(result.stderr.split())
    assert result.exit_code == ExitCode.HOST_NOT_READY, result.output
    assert "Error creating KVM object: No such file or directory" in text  # what Firecracker said
    assert f"kvm: {kvm} does not exist" in text and "modprobe kvm_intel" in text
    assert "firec doctor" in text
    assert Registry(state).records() == []
    assert list((short_tmp / "vms").iterdir()) == []


# -- as another user --------------------------------------------------------------------------


def _interpreter_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)),
        "HOME": "/nonexistent",
    }


@functools.cache
def _python_for(prefix: tuple[str, ...]) -> str | None:
    """A Python that ``prefix`` (a setpriv) may run, from a script too, and that finds firec."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if not os.path.isfile(python):
            continue
        probe = subprocess.run(
            [*prefix, "/bin/sh", "-c", f'exec "{python}" -c "import firec.cli"'],
            env=_interpreter_env(),
            capture_output=True,
            timeout=60,
        )
        if probe.returncode == 0:
            return python
    return None


def _as(prefix: list[str], directory: Path) -> tuple[list[str], str]:
    """How to run ``firec`` through ``prefix``, and the Python it uses (skips when none fits)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the command line as another user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    python = _python_for(tuple(prefix))
    if python is None:
        pytest.skip(f"no Python with firec that {' '.join(prefix)} may run")
    directory.chmod(0o755)
    return [*prefix, python, "-m", "firec.cli"], python


def _module_script(path: Path, python: str, module: str) -> Path:
    path.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
    path.chmod(0o755)
    return path


def _readable_guest(directory: Path) -> Path:
    from firec.testing.guest import build_test_guest

    kernel = directory / "guest.elf"
    shutil.copyfile(build_test_guest(), kernel)
    kernel.chmod(0o644)
    return kernel


def _run(command: list[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "run", *args],
        env={**_interpreter_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_kvm_access_as_another_user_exits_3_without_joining_roots_group(
    short_tmp: Path, backend: str
) -> None:
    """Emulator: a KVM node only root may open; real Firecracker: this host's own /dev/kvm."""
    command, python = _as(AS_NOBODY, short_tmp)
    shared = short_tmp / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    env = {"FIREC_STATE_DIR": str(shared / "state")}
    if backend == "emulator":
        kvm = short_tmp / "kvm"
        os.mknod(kvm, stat.S_IFCHR | 0o600, os.makedev(10, 232))
        os.chmod(kvm, 0o600)
        env["FIREC_KVM_DEVICE"] = str(kvm)
        firecracker = _module_script(short_tmp / "firecracker", python, "firec.testing.emulator")
    else:
        kvm = Path("/dev/kvm")
        if not kvm.exists() or kvm.stat().st_mode & 0o006:
            pytest.skip("this host's /dev/kvm is missing, or open to every user")
        firecracker = Path(os.environ["FIRECRACKER_BIN"])
    proc = _run(
        command,
        str(_readable_guest(short_tmp)),
        "--boot-args",
        "console=ttyS0",
        "--firecracker-bin",
        str(firecracker),
        "--workdir",
        str(shared / "vms"),
        env=env,
    )
    text = " ".join(proc.stderr.split())
    assert proc.returncode == ExitCode.HOST_NOT_READY, proc.stderr
    if backend == "emulator":
        assert "Error creating KVM object: Permission denied" in text
    owner = "root:root" if backend == "emulator" else ""
    assert f"kvm: {kvm} is not readable and writable by nobody (crw-" in text
    assert owner in text
    assert "setfacl -m u:nobody:rw" in text
    assert "-aG root" not in text and "Traceback" not in text
    assert list((shared / "vms").iterdir()) == []
    assert Registry(shared / "state").records() == []


@pytest.mark.parametrize(
    ("prefix", "lacks"),
    [
        pytest.param(AS_NOBODY, "nobody (uid 65534) lacks every capability", id="nobody"),
        pytest.param(AS_ROOT_WITHOUT_CAPABILITIES, "root (uid 0) lacks every", id="capless-root"),
    ],
)
@pytest.mark.parametrize("chroot_base", ["default", "given"])
def test_jailed_without_root_says_it_needs_root(
    short_tmp: Path, prefix: list[str], lacks: str, chroot_base: str
) -> None:
    command, python = _as(prefix, short_tmp)
    shared = short_tmp / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    base = ["--chroot-base", str(shared / "jail")] if chroot_base == "given" else []
    proc = _run(
        command,
        str(_readable_guest(short_tmp)),
        "--jailer",
        "--uid",
        "1234",
        "--gid",
        "1234",
        *base,
        "--firecracker-bin",
        str(_module_script(short_tmp / "firecracker", python, "firec.testing.emulator")),
        "--jailer-bin",
        str(_module_script(short_tmp / "jailer", python, "firec.testing.jailer")),
        "--workdir",
        str(shared / "vms"),
        env={"FIREC_STATE_DIR": str(shared / "state")},
    )
    text = " ".join(proc.stderr.split())
    assert proc.returncode == ExitCode.HOST_NOT_READY, proc.stderr
    assert f"error: --jailer: the jailer needs root: {lacks}" in text
    assert "CAP_SYS_ADMIN" in text and "CAP_MKNOD" in text
    assert "hint: run it as root (sudo firec run --jailer ...), or leave out --jailer" in text
    for wrong in ("usermod", "Permission denied", "Operation not permitted", "Errno"):
        assert wrong not in text
    assert not (shared / "vms").exists() and not (shared / "jail").exists()
    assert Registry(shared / "state").records() == []
