"""``firec doctor --kernel K``: what a guest kernel lacks for firec's agent, from its config
(a file beside it, or the IKCONFIG inside it)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firec.cli import app
from firec.cli.output import ExitCode
from firec.host.checks import Check
from firec.host.kernel_checks import check_kernel, find_kernel_config
from firec.testing import emulator_binary
from tests.test_kernel_extract import bzimage, tiny_elf

#: What Firecracker's own guest kernel configs set: everything built in.
GOOD = """\
CONFIG_VSOCKETS=y
CONFIG_VIRTIO_VSOCKETS=y
CONFIG_VIRTIO_VSOCKETS_COMMON=y
CONFIG_VIRTIO=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y
CONFIG_VIRTIO_BLK=y
CONFIG_EXT4_FS=y
CONFIG_DEVTMPFS=y
"""

#: What Debian's cloud kernel (6.1) sets: virtio as modules, no command-line mmio devices.
DEBIAN_CLOUD = """\
CONFIG_VSOCKETS=m
CONFIG_VIRTIO_VSOCKETS=m
CONFIG_VIRTIO_VSOCKETS_COMMON=m
CONFIG_PCI=y
CONFIG_VIRTIO=m
CONFIG_VIRTIO_PCI_LIB=m
CONFIG_VIRTIO_PCI_LIB_LEGACY=m
CONFIG_VIRTIO_PCI=m
CONFIG_VIRTIO_MMIO=m
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set
CONFIG_VIRTIO_BLK=m
CONFIG_EXT4_FS=y
CONFIG_DEVTMPFS=y
"""


def kernel_with(tmp_path: Path, config: str, *, name: str = "vmlinux") -> Path:
    kernel = tmp_path / name
    kernel.write_bytes(tiny_elf())
    (tmp_path / f"{name}.config").write_text(config)
    return kernel


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_kernel_with_everything_built_in(tmp_path: Path) -> None:
    checks = check_kernel(kernel_with(tmp_path, GOOD))
    assert [c.name for c in checks] == [
        "kernel",
        "kernel vsock",
        "kernel virtio",
        "kernel virtio-blk",
        "kernel ext4",
        "kernel devtmpfs",
    ]
    assert all(c.ok and c.required for c in checks), checks
    assert checks[0].detail == f"configuration from {tmp_path / 'vmlinux.config'}"
    assert "virtio-mmio" in by_name(checks)["kernel virtio"].detail


def test_debians_cloud_kernel_needs_an_initrd_and_pci(tmp_path: Path) -> None:
    checks = by_name(check_kernel(kernel_with(tmp_path, DEBIAN_CLOUD)))
    vsock = checks["kernel vsock"]
    assert not vsock.ok
    assert "built as a module (CONFIG_VSOCKETS=m, CONFIG_VIRTIO_VSOCKETS=m)" in vsock.detail
    assert "an initrd that loads virtio, vsock, vmw_vsock_virtio_transport_common, " in vsock.detail
    virtio = checks["kernel virtio"]
    assert not virtio.ok
    assert "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set" in virtio.detail
    assert "virtio-pci: built as modules (virtio, virtio_pci_modern_dev" in virtio.detail
    assert "Firecracker 1.13 or newer with --enable-pci" in virtio.fix
    assert "CONFIG_VIRTIO_BLK=m" in checks["kernel virtio-blk"].detail
    assert checks["kernel ext4"].ok and checks["kernel devtmpfs"].ok


def test_what_is_not_built_is_named(tmp_path: Path) -> None:
    config = GOOD.replace("CONFIG_VSOCKETS=y", "# CONFIG_VSOCKETS is not set")
    config = config.replace("CONFIG_EXT4_FS=y\n", "")
    checks = by_name(check_kernel(kernel_with(tmp_path, config)))
    assert checks["kernel vsock"].detail == "not built: CONFIG_VSOCKETS is not set"
    assert checks["kernel vsock"].fix == "use a kernel built with CONFIG_VSOCKETS=y"
    assert checks["kernel ext4"].detail == "not built: CONFIG_EXT4_FS is not set"
    assert checks["kernel virtio"].ok and checks["kernel devtmpfs"].ok


def test_pci_alone_is_enough_from_firecracker_1_13(tmp_path: Path) -> None:
    config = DEBIAN_CLOUD.replace("=m", "=y")
    virtio = by_name(check_kernel(kernel_with(tmp_path, config)))["kernel virtio"]
    assert virtio.ok
    assert "virtio-pci only" in virtio.detail and "1.13 or newer" in virtio.detail


def test_neither_transport(tmp_path: Path) -> None:
    config = "CONFIG_VIRTIO=y\nCONFIG_EXT4_FS=y\n"
    virtio = by_name(check_kernel(kernel_with(tmp_path, config)))["kernel virtio"]
    assert not virtio.ok
    assert "virtio-pci: not built" in virtio.detail


def test_the_config_beside_a_fetched_kernel_is_found(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(tiny_elf())
    (tmp_path / "config-6.1.0-50-cloud-amd64").write_text(GOOD)
    config = find_kernel_config(tmp_path / "vmlinux")
    assert config is not None and config.source == str(tmp_path / "config-6.1.0-50-cloud-amd64")


def test_the_config_of_the_same_version_is_chosen(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz-6.1.0-1").write_bytes(tiny_elf())
    (tmp_path / "config-6.1.0-1").write_text(GOOD)
    (tmp_path / "config-6.1.0-2").write_text(DEBIAN_CLOUD)
    config = find_kernel_config(tmp_path / "vmlinuz-6.1.0-1")
    assert config is not None and config.source.endswith("config-6.1.0-1")


def test_the_built_in_config_is_read(tmp_path: Path) -> None:
    ikconfig = b"IKCFG_ST" + gzip.compress(DEBIAN_CLOUD.encode()) + b"IKCFG_ED"
    vmlinux = tiny_elf(extra=b"\0" * 100 + ikconfig + b"\0" * 50)
    (tmp_path / "elf").mkdir()
    (tmp_path / "elf" / "vmlinux").write_bytes(vmlinux)
    config = find_kernel_config(tmp_path / "elf" / "vmlinux")
    assert config is not None and config.get("CONFIG_VIRTIO_BLK") == "m"
    assert config.source == f"{tmp_path / 'elf' / 'vmlinux'} (built-in IKCONFIG)"
    (tmp_path / "bz").mkdir()  # inside a bzImage's compressed payload too
    payload = gzip.compress(vmlinux, mtime=0) + struct.pack("<I", len(vmlinux))
    (tmp_path / "bz" / "bzImage").write_bytes(bzimage(payload))
    config = find_kernel_config(tmp_path / "bz" / "bzImage")
    assert config is not None and config.get("CONFIG_VIRTIO_MMIO") == "m"


def test_no_readable_config(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(tiny_elf())
    (check,) = check_kernel(tmp_path / "vmlinux")
    assert check.name == "kernel" and not check.ok and check.required
    assert "its configuration is not readable" in check.detail
    assert "vmlinux.config" in check.fix


def test_a_missing_kernel(tmp_path: Path) -> None:
    (check,) = check_kernel(tmp_path / "nope")
    assert not check.ok and check.detail == f"{tmp_path / 'nope'}: no such kernel file"


@pytest.fixture
def ready_host(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from firec.host import checks as host

    monkeypatch.setenv("FIREC_STATE_DIR", str(short_tmp / "state"))
    monkeypatch.setenv("FIRECRACKER_BIN", str(emulator_binary()))
    if not host.check_kvm().ok:
        pytest.skip(f"this host has no usable KVM: {host.check_kvm().detail}")


def test_doctor_with_a_kernel_that_lacks_things(ready_host: None, tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, DEBIAN_CLOUD)
    result = CliRunner().invoke(app, ["doctor", "--kernel", str(kernel), "--json"])
    assert result.exit_code == ExitCode.HOST_NOT_READY
    report = json.loads(result.stdout)
    assert report["ready"] is False
    failed = [c["name"] for c in report["checks"] if not c["ok"] and c["required"]]
    assert failed == ["kernel vsock", "kernel virtio", "kernel virtio-blk"]
    result = CliRunner().invoke(app, ["doctor", "--kernel", str(kernel)])
    text = " ".join(result.stdout.split())
    assert "the kernel lacks what firec's guest agent needs: vsock, virtio, virtio-blk" in text


def test_doctor_with_a_good_kernel(ready_host: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["doctor", "--json", "--kernel", str(kernel_with(tmp_path, GOOD))]
    )
    assert result.exit_code == 0, result.stdout
    names = [c["name"] for c in json.loads(result.stdout)["checks"]]
    assert "kernel vsock" in names
