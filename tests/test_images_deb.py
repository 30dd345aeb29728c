"""Debian packages read in Python (firec.images.deb): packages made here, broken ones, and
Debian's own busybox-static, whose busybox becomes a docker save image firec builds."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from firec.errors import FirecError
from firec.images import build_rootfs, read_image_defaults
from firec.images.deb import ar_members, extract_deb_files
from tests.debian_archive import ar, deb
from tests.test_images_agent import debugfs, docker_save, fsck, image_file, inode, layer


def test_the_files_picked_are_copied(tmp_path: Path) -> None:
    package = tmp_path / "p.deb"
    package.write_bytes(
        deb({"boot/vmlinuz-1": b"kernel", "boot/config-1": b"C=y\n", "etc/x": b"x"})
    )
    (tmp_path / "out").mkdir()
    found = extract_deb_files(package, lambda n: n.startswith("boot/"), tmp_path / "out")
    assert found == {
        "boot/vmlinuz-1": tmp_path / "out" / "vmlinuz-1",
        "boot/config-1": tmp_path / "out" / "config-1",
    }
    assert (tmp_path / "out" / "vmlinuz-1").read_bytes() == b"kernel"
    assert [m.name for m in ar_members(package)] == [
        "debian-binary",
        "control.tar.xz",
        "data.tar.xz",
    ]


def test_what_is_not_a_package_is_named(tmp_path: Path) -> None:
    cases = {
        "text": (b"hello", "not a Debian package (no ar archive header)"),
        "cut": (deb({"a": b"x" * 5000})[:-100], "is truncated"),
        "nodata": (
            ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"")]),
            "without a data.tar",
        ),
        "order": (ar([("data.tar", b"")]), "its first member is not debian-binary"),
        "corrupt": (
            ar([("debian-binary", b"2.0\n"), ("data.tar.xz", b"not xz")]),
            "corrupt data.tar.xz",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.deb"
        path.write_bytes(data)
        with pytest.raises(FirecError, match=re.escape(message)):
            extract_deb_files(path, lambda n: True, tmp_path)


def _busybox_deb(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("busybox-static_*.deb"))
    if found:
        return found[-1]
    try:
        result = subprocess.run(
            ["apt-get", "download", "busybox-static"],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run apt-get download busybox-static: {exc}")
    found = sorted(cache.glob("busybox-static_*.deb"))
    if result.returncode != 0 or not found:
        pytest.skip(f"apt-get download busybox-static failed: {result.stderr.strip()[-300:]}")
    return found[-1]


@pytest.mark.needs_tool("mkfs.ext4", "debugfs")
def test_debians_busybox_static_as_an_image(tmp_path: Path) -> None:
    package = _busybox_deb(Path.home() / ".cache" / "firec-tests" / "busybox-static")
    (tmp_path / "pkg").mkdir()
    found = extract_deb_files(package, lambda n: n == "bin/busybox", tmp_path / "pkg")
    busybox = found["bin/busybox"].read_bytes()
    assert busybox[:4] == b"\x7fELF"
    found["bin/busybox"].chmod(0o755)
    said = subprocess.run([found["bin/busybox"]], capture_output=True, text=True, timeout=30)
    assert "BusyBox" in said.stdout + said.stderr  # the real program, taken out whole
    root = layer({"bin/busybox": busybox}, symlinks={"bin/sh": "busybox", "bin/ls": "busybox"})
    config = {"config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"}}
    source = docker_save(tmp_path / "busybox.tar", [root], config)
    image = build_rootfs(source, tmp_path / "rootfs.ext4", agent=found["bin/busybox"])
    fsck(image)
    assert image_file(image, "/bin/busybox", tmp_path) == busybox
    assert 'Fast link dest: "busybox"' in inode(image, "/bin/sh")
    assert "firec-agent" in debugfs(image, "ls /.firec")
    defaults = read_image_defaults(image)
    assert defaults.argv() == ["/bin/sh"] and defaults.env == ("PATH=/bin",)
    assert (
        json.loads(image_file(image, "/.firec/image.json", tmp_path))["init"]
        == "/.firec/firec-agent"
    )
