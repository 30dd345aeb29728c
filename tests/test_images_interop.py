"""build_rootfs on images written by real third-party tools: umoci and skopeo.

umoci builds an OCI image layout with real layer diffs (whiteouts included);
skopeo turns it into an ``oci-archive`` tarball and a ``docker-archive`` (the
``docker save`` format, whose legacy ``<id>/layer.tar`` entries are symlinks).
Skipped when the tools are not installed (Debian: apt-get install umoci skopeo).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from firec.images import build_rootfs

pytestmark = pytest.mark.needs_tool("umoci", "skopeo")


def run(*args: str, cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"


@pytest.fixture(scope="module")
def umoci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with two layers; the second deletes and replaces things."""
    work = tmp_path_factory.mktemp("umoci")
    run("umoci", "init", "--layout", "img", cwd=work)
    run("umoci", "new", "--image", "img:t", cwd=work)
    run("umoci", "unpack", "--rootless", "--image", "img:t", "b1", cwd=work)
    root = work / "b1/rootfs"
    for d in ("etc", "gone/sub", "opq", "bin"):
        (root / d).mkdir(parents=True)
    (root / "etc/a").write_text("a\n")
    (root / "etc/old").write_text("old\n")
    (root / "gone/sub/x").write_text("x\n")
    (root / "opq/one").write_text("1\n")
    (root / "bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "bin/tool", 0o4755)
    os.symlink("../etc/a", root / "bin/a-link")
    run("umoci", "repack", "--image", "img:t", "b1", cwd=work)
    run("umoci", "unpack", "--rootless", "--image", "img:t", "b2", cwd=work)
    root = work / "b2/rootfs"
    (root / "etc/old").unlink()
    shutil.rmtree(root / "gone")
    shutil.rmtree(root / "opq")
    (root / "opq").mkdir()
    (root / "opq/two").write_text("2\n")
    (root / "etc/a").write_text("a, changed\n")
    run("umoci", "repack", "--image", "img:t", "b2", cwd=work)
    return work / "img"


def check(image: Path) -> None:
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout

    def out(request: str) -> str:
        return subprocess.run(
            ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
        ).stdout

    assert out("cat /etc/a") == "a, changed\n"
    assert "old" not in out("ls /etc").split()
    assert "gone" not in out("ls /").split()
    assert "two" in out("ls /opq") and "one" not in out("ls /opq")
    assert "104755" in out("ls -l /bin")
    assert 'Fast link dest: "../etc/a"' in out("stat /bin/a-link")
    assert ".wh." not in out("ls /") + out("ls /etc") + out("ls /opq")


def test_umoci_layout_directory(umoci_layout: Path, tmp_path: Path) -> None:
    check(build_rootfs(umoci_layout, tmp_path / "rootfs.ext4"))


def test_skopeo_oci_archive(umoci_layout: Path, tmp_path: Path) -> None:
    archive = tmp_path / "oci.tar"
    run("skopeo", "copy", f"oci:{umoci_layout}:t", f"oci-archive:{archive}", cwd=tmp_path)
    check(build_rootfs(archive, tmp_path / "rootfs.ext4"))


def test_skopeo_docker_archive_with_linked_layers(umoci_layout: Path, tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    run(
        "skopeo",
        "copy",
        f"oci:{umoci_layout}:t",
        f"docker-archive:{archive}:test/img:t",
        cwd=tmp_path,
    )
    check(build_rootfs(archive, tmp_path / "rootfs.ext4"))
    # Name the layers the way older `docker save` did: <id>/layer.tar, which
    # skopeo writes as symlinks to the real layer files.
    with tarfile.open(archive) as tar:
        links = {m.linkname.removeprefix("../"): m.name for m in tar if m.issym()}
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        manifest[0]["Layers"] = [links[name] for name in manifest[0]["Layers"]]
        relinked = tmp_path / "relinked.tar"
        with tarfile.open(relinked, "w") as out:
            for member in tar:
                if member.name == "manifest.json":
                    data = json.dumps(manifest).encode()
                    member.size = len(data)
                    out.addfile(member, io.BytesIO(data))
                else:
                    out.addfile(member, tar.extractfile(member) if member.isfile() else None)
    check(build_rootfs(relinked, tmp_path / "rootfs2.ext4"))
