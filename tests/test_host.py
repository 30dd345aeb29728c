"""Host readiness checks (firec doctor): real devices and tools, plus each failure path."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firec.host.checks import (
    JAILER_CAPABILITIES,
    Check,
    check_binary,
    check_cgroups,
    check_cni,
    check_e2fsprogs,
    check_host,
    check_jailer_privileges,
    check_kvm,
    check_nft,
    check_tun,
    find_binary,
    kvm_device,
)
from firec.images import e2fs

REAL_FIRECRACKER = os.environ.get("FIRECRACKER_BIN", "")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited FIRECRACKER_BIN/JAILER_BIN/CNI_PATH/FIREC_KVM_DEVICE, an empty data dir."""
    for name in ("FIRECRACKER_BIN", "JAILER_BIN", "CNI_PATH", "FIREC_KVM_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def script(path: Path, output: str, code: int = 0) -> Path:
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    path.chmod(0o755)
    return path


def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nothing = tmp_path / "empty-bin"
    nothing.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(nothing))


def test_check_host_runs_every_check_in_order() -> None:
    checks = check_host()
    assert [c.name for c in checks] == [
        "kvm",
        "firecracker",
        "jailer",
        "cgroups",
        "tun",
        "nft",
        "cni",
        "e2fsprogs",
    ]
    assert all(isinstance(c, Check) for c in checks)
    assert all(c.fix for c in checks if not c.ok), "every failing check says how to fix it"
    assert all(not c.fix for c in checks if c.ok)
    assert [c.name for c in checks if c.required] == ["kvm", "firecracker"]


# -- KVM -------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="/dev/kvm not usable here")
def test_real_kvm_reports_api_12() -> None:
    check = check_kvm()
    assert check.ok, check
    assert check.detail == "/dev/kvm: KVM API version 12"


def test_missing_kvm(tmp_path: Path) -> None:
    check = check_kvm(tmp_path / "kvm")
    assert not check.ok and check.required
    assert "does not exist" in check.detail
    assert "modprobe kvm_intel" in check.fix


def test_kvm_that_is_not_a_device(tmp_path: Path) -> None:
    fake = tmp_path / "kvm"
    fake.write_text("")
    check = check_kvm(fake)
    assert not check.ok and "not a character device" in check.detail


def test_kvm_that_does_not_speak_kvm() -> None:
    check = check_kvm("/dev/null")  # a read-write character device, but no KVM ioctls
    assert not check.ok
    assert "KVM_GET_API_VERSION failed" in check.detail


_NO_ACCESS = """
import sys
from firec.host.checks import check_kvm
check = check_kvm(sys.argv[1])
print(check.ok, check.detail, "|", check.fix)
"""


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make a device node and drop capabilities"
)
@pytest.mark.needs_tool("setpriv")
def test_kvm_without_permission_says_to_join_its_group(tmp_path: Path) -> None:
    node = tmp_path / "kvm"
    os.mknod(node, stat.S_IFCHR | 0o660, os.makedev(10, 232))
    os.chown(node, 4321, 4321)
    os.chmod(node, 0o660)
    proc = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-c",
            _NO_ACCESS,
            str(node),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("False ")
    assert "is not readable and writable by root (crw-rw----" in proc.stdout
    assert "usermod -aG" in proc.stdout and "setfacl" in proc.stdout


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make a device node and drop capabilities"
)
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
def test_kvm_for_root_only_never_says_to_join_roots_group(tmp_path: Path) -> None:
    node = tmp_path / "kvm"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 232))
    os.chown(node, 4321, 0)
    os.chmod(node, 0o600)  # group root, as many hosts have it, and the group gives nothing
    proc = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-c",
            _NO_ACCESS,
            str(node),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "is not readable and writable by root (crw------- 4321:root)" in proc.stdout
    fix = proc.stdout.split("|", 1)[1]
    assert "usermod -aG root" not in fix
    assert 'GROUP="kvm", MODE="0660"' in fix and "usermod -aG kvm root" in fix
    assert f"setfacl -m u:root:rw {node}" in fix


def test_the_kvm_device_can_be_named_for_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREC_KVM_DEVICE", str(tmp_path / "kvm"))
    assert kvm_device() == tmp_path / "kvm"
    check = check_kvm()
    assert not check.ok and check.detail == f"{tmp_path / 'kvm'} does not exist"
    monkeypatch.delenv("FIREC_KVM_DEVICE")
    assert kvm_device() == Path("/dev/kvm")


@pytest.mark.parametrize(
    ("cap_eff", "missing"),
    [
        (0, list(JAILER_CAPABILITIES)),
        ((1 << 41) - 1, []),
        (((1 << 41) - 1) & ~(1 << 27), ["CAP_MKNOD"]),
        (
            (1 << 21) | (1 << 18),
            ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SETGID", "CAP_SETUID", "CAP_MKNOD"],
        ),
    ],
)
def test_jailer_privileges_follow_the_effective_capabilities(
    tmp_path: Path, cap_eff: int, missing: list[str]
) -> None:
    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\n")
    check = check_jailer_privileges(status)
    assert check.ok == (not missing) and not check.required
    if missing:
        assert f"({', '.join(missing)})" in check.detail
        assert "run firec as root (sudo)" in check.fix
    listed = [name for name in JAILER_CAPABILITIES if name in check.detail]
    assert listed == missing


# -- firecracker and jailer -----------------------------------------------------------------


def test_binary_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fc = script(tmp_path / "my-firecracker", "Firecracker v1.2.3")
    monkeypatch.setenv("FIRECRACKER_BIN", str(fc))
    assert find_binary("firecracker") == (fc, "$FIRECRACKER_BIN")
    check = check_binary("firecracker")
    assert check.ok and check.required
    assert check.detail == f"Firecracker v1.2.3 at {fc} (from $FIRECRACKER_BIN)"


def test_binary_environment_pointing_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAILER_BIN", str(tmp_path / "missing-jailer"))
    check = check_binary("jailer")
    assert not check.ok and not check.required
    assert "is not an executable file" in check.detail
    assert check.fix == "point JAILER_BIN at a jailer binary, or unset it"


def test_binary_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script(bindir / "jailer", "Jailer v1.0.0-44-gc73a27cb-dirty")
    monkeypatch.setenv("PATH", str(bindir))
    check = check_binary("jailer")
    assert check.ok
    assert check.detail.startswith("Jailer v1.0.0-44-gc73a27cb-dirty at ")
    assert check.detail.endswith("(from PATH)")


def test_binary_from_firec_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_path(tmp_path, monkeypatch)
    from firec.host.install import bin_dir, normalize_arch

    for version in ("v1.10.0", "v1.14.2"):
        release = bin_dir() / version
        release.mkdir(parents=True)
        script(release / "firecracker", f"Firecracker {version}")
        script(release / "jailer", f"Jailer {version}")
        record = {"version": version, "arch": normalize_arch(), "sha256": "0" * 64, "source": "x"}
        (release / "release.json").write_text(json.dumps(record))
    path, how = find_binary("firecracker")
    assert (path, how) == (bin_dir() / "v1.14.2" / "firecracker", "firec install")
    check = check_binary("firecracker")
    assert (
        check.ok
        and "Firecracker v1.14.2" in check.detail
        and "(from firec install)" in check.detail
    )


def test_binary_nowhere_says_firec_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_path(tmp_path, monkeypatch)
    assert find_binary("firecracker") == (None, "")
    check = check_binary("firecracker")
    assert not check.ok and check.required
    assert "not found on PATH" in check.detail
    assert "`firec install`" in check.fix and "FIRECRACKER_BIN=" in check.fix


def test_binary_that_does_not_say_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRECRACKER_BIN", str(script(tmp_path / "fc", "hello", code=3)))
    check = check_binary("firecracker")
    assert not check.ok
    assert "did not report a version (exit 3" in check.detail


@pytest.mark.skipif(not REAL_FIRECRACKER, reason="FIRECRACKER_BIN not set")
def test_real_firecracker_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRECRACKER_BIN", REAL_FIRECRACKER)
    check = check_binary("firecracker")
    assert check.ok, check
    assert check.detail.startswith("Firecracker v1.")


# -- cgroups -------------------------------------------------------------------------------

V1_LINES = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
V2_LINE = (
    "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)
UNIFIED = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
PLAIN = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"


@pytest.mark.parametrize(
    ("content", "ok", "detail"),
    [
        (PLAIN + V1_LINES, True, "cgroup v1 (controllers: cpu, cpuacct, cpuset, systemd, xattr)"),
        (PLAIN + V1_LINES + UNIFIED, True, "cgroup2 also at /sys/fs/cgroup/unified (hybrid)"),
        (PLAIN + V2_LINE, True, "cgroup v2 at /sys/fs/cgroup (controllers: "),
        (PLAIN, False, "no cgroup filesystem is mounted"),
    ],
)
def test_cgroup_versions(tmp_path: Path, content: str, ok: bool, detail: str) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(content)
    check = check_cgroups(mountinfo)
    assert check.ok is ok
    assert detail in check.detail
    assert not check.required
    if not ok:
        assert "mount -t cgroup2" in check.fix


def test_real_cgroups_are_found() -> None:
    check = check_cgroups()
    assert check.ok, check
    assert check.detail.startswith("cgroup v")


# -- tun, nft, CNI, e2fsprogs -------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun here")
def test_real_tun() -> None:
    check = check_tun()
    if os.access("/dev/net/tun", os.R_OK | os.W_OK):
        assert check.ok and check.detail == "/dev/net/tun opens read-write"


def test_missing_tun(tmp_path: Path) -> None:
    check = check_tun(tmp_path / "tun")
    assert not check.ok and "modprobe tun" in check.fix
    (tmp_path / "tun").write_text("")
    assert "not a character device" in check_tun(tmp_path / "tun").detail


@pytest.mark.needs_tool("nft")
def test_real_nft() -> None:
    check = check_nft()
    assert check.ok, check
    assert check.detail.startswith("nftables v")


def test_missing_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    check = check_nft()
    assert not check.ok and "apt-get install nftables" in check.fix


def test_cni_plugins_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "cni"
    plugins.mkdir()
    for name in ("bridge", "host-local", "ptp"):
        script(plugins / name, "")
    (plugins / "README").write_text("not a plugin")
    monkeypatch.setenv("CNI_PATH", f"{tmp_path / 'nope'}:{plugins}")
    check = check_cni()
    assert check.ok
    assert check.detail == f"3 plugins in {plugins}: bridge, host-local, ptp"


def test_no_cni_plugins(tmp_path: Path) -> None:
    check = check_cni([tmp_path / "none", tmp_path])
    assert not check.ok
    assert "no CNI plugins in" in check.detail
    assert "containernetworking-plugins" in check.fix


@pytest.mark.needs_tool("cni-plugins")
def test_real_cni_plugins() -> None:
    check = check_cni()
    assert check.ok and "bridge" in check.detail


@pytest.mark.needs_tool("mkfs.ext4")
def test_real_e2fsprogs() -> None:
    check = check_e2fsprogs()
    assert check.ok, check
    assert check.detail.startswith("e2fsprogs 1.")


def test_missing_e2fsprogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_path(tmp_path, monkeypatch)
    monkeypatch.setattr(e2fs, "_SBIN_DIRS", (str(tmp_path / "no-sbin"),))
    check = check_e2fsprogs()
    assert not check.ok
    assert check.detail == "missing mkfs.ext4, e2fsck, debugfs (needed to build images)"
    assert "apt-get install e2fsprogs" in check.fix


def test_docstring_examples() -> None:
    import doctest

    import firec.host.checks

    result = doctest.testmod(firec.host.checks)
    assert result.failed == 0 and result.attempted > 0
