"""build_rootfs: ext4 images from directories, OCI layouts and docker save tarballs.

Every image is checked with the real e2fsprogs: ``e2fsck -fn`` must find it clean,
and ``debugfs`` lists and reads what is inside.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard

from firec.errors import FirecError, ValidationError
from firec.images import build_rootfs, parse_size

pytestmark = pytest.mark.needs_tool("mkfs.ext4", "debugfs")

# -- helpers: layers, OCI layouts, docker save tarballs --------------------------------


def layer(*entries: tuple[Any, ...]) -> bytes:
    """A tar layer. Entries: (kind, name, ...) with kind file/dir/sym/link/chr/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            kind, name, *rest = entry
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = b""
            opts: dict[str, Any] = rest[-1] if rest and isinstance(rest[-1], dict) else {}
            if kind == "file":
                data = rest[0]
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = rest[0]
                info.mode = 0o777
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = rest[0]
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = rest[0], rest[1]
                info.mode = 0o666
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                info.mode = 0o644
            for key, value in opts.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def oci_archive(
    path: Path,
    layers: Sequence[bytes],
    *,
    compress: Sequence[str] = (),
    corrupt_digest: bool = False,
    platforms: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write an OCI image layout tarball; ``compress[i]`` is "", "gzip" or "zstd"."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    descriptors = []
    for i, raw in enumerate(layers):
        how = compress[i] if i < len(compress) else "gzip"
        data = {
            "": raw,
            "gzip": gzip.compress(raw, mtime=0),
            "zstd": zstandard.ZstdCompressor().compress(raw),
        }[how]
        media = (
            "application/vnd.oci.image.layer.v1.tar"
            + {"": "", "gzip": "+gzip", "zstd": "+zstd"}[how]
        )
        digest = blob(data)
        if corrupt_digest and i == len(layers) - 1:
            digest = "sha256:" + "0" * 64
            blobs["0" * 64] = data
        descriptors.append({"mediaType": media, "digest": digest, "size": len(data)})
    config = blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config},
        "layers": descriptors,
    }
    manifest_digest = blob(json.dumps(manifest).encode())
    entries = []
    for os_name, arch in platforms or [("linux", "amd64")]:
        if (os_name, arch) == ("linux", "amd64"):
            digest = manifest_digest
        else:  # another platform's manifest: a single layer that must not be used
            other = dict(manifest, layers=[])
            other_layer = blob(gzip.compress(layer(("file", "WRONG-PLATFORM", b"x")), mtime=0))
            other["layers"] = [{"mediaType": "x", "digest": other_layer, "size": 1}]
            digest = blob(json.dumps(other).encode())
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "platform": {"os": os_name, "architecture": arch},
            }
        )
    index = {"schemaVersion": 2, "manifests": entries}
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add_bytes(tar, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add_bytes(tar, f"blobs/sha256/{digest}", data)
    return path


def docker_save(path: Path, layers: Sequence[bytes], *, images: int = 1) -> Path:
    """Write a classic ``docker save`` tarball (manifest.json + <id>/layer.tar)."""
    names = []
    with tarfile.open(path, "w") as tar:
        for i, data in enumerate(layers):
            layer_id = hashlib.sha256(b"id%d" % i).hexdigest()
            add_bytes(tar, f"{layer_id}/layer.tar", data)
            add_bytes(tar, f"{layer_id}/VERSION", b"1.0")
            names.append(f"{layer_id}/layer.tar")
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        add_bytes(tar, "cfg.json", config)
        manifest = [
            {"Config": "cfg.json", "RepoTags": [f"test/img{n}:latest"], "Layers": names}
            for n in range(images)
        ]
        add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def debugfs(image: Path, request: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    )
    return proc.stdout


def listing(image: Path, directory: str) -> dict[str, tuple[int, int, int]]:
    """name -> (mode, uid, gid) from ``debugfs -R 'ls -l DIR'``."""
    out: dict[str, tuple[int, int, int]] = {}
    for line in debugfs(image, f"ls -l {directory}").splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[1].isdigit():
            out[fields[-1]] = (int(fields[1], 8), int(fields[3]), int(fields[4]))
    return out


def cat(image: Path, path: str) -> bytes:
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=True
    )
    return proc.stdout


def fsck_clean(image: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- directories -----------------------------------------------------------------------


def test_build_from_directory_keeps_content_modes_links_and_owners(tmp_path: Path) -> None:
    src = tmp_path / "root"
    (src / "etc").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "empty").mkdir()
    (src / "etc/hostname").write_text("firec-vm\n")
    (src / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    if os.geteuid() == 0:
        os.chown(src / "bin/tool", 1234, 5678)
    os.chmod(src / "bin/tool", 0o4755)  # after chown, which clears set-uid
    os.symlink("/etc/hostname", src / "bin/hostname-link")
    os.link(src / "etc/hostname", src / "etc/hostname.hard")
    image = build_rootfs(src, tmp_path / "rootfs.ext4", label="firec-root")

    assert image == tmp_path / "rootfs.ext4"
    fsck_clean(image)
    assert cat(image, "/etc/hostname") == b"firec-vm\n"
    bin_entries = listing(image, "/bin")
    assert bin_entries["tool"][0] == 0o104755
    if os.geteuid() == 0:
        assert bin_entries["tool"][1:] == (1234, 5678)
    assert stat.S_ISLNK(bin_entries["hostname-link"][0])
    assert "/etc/hostname" in debugfs(image, "stat /bin/hostname-link")
    assert set(listing(image, "/")) >= {"etc", "bin", "empty", "lost+found"}
    inodes = {
        line.split()[0]
        for line in debugfs(image, "ls -l /etc").splitlines()
        if line.split()[-1:] in (["hostname"], ["hostname.hard"])
    }
    assert len(inodes) == 1  # the hard link is kept
    assert "firec-root" in debugfs(image, "stats")
    assert leftovers(tmp_path) == []


def test_auto_size_holds_many_small_files_and_a_big_one(tmp_path: Path) -> None:
    src = tmp_path / "root"
    for d in range(8):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(500):
            (src / f"d{d}/f{i}").write_bytes(b"x" * 200)
    (src / "big").write_bytes(os.urandom(24 << 20))
    image = build_rootfs(src, tmp_path / "rootfs.ext4")
    fsck_clean(image)
    assert len(listing(image, "/d7")) == 502
    size = image.stat().st_size
    assert 24 << 20 < size < 128 << 20
    assert size % (4 << 20) == 0


def test_explicit_size_is_used(tmp_path: Path) -> None:
    src = tmp_path / "root"
    src.mkdir()
    (src / "f").write_text("x")
    image = build_rootfs(src, tmp_path / "img", size="64M")
    assert image.stat().st_size == 64 << 20
    fsck_clean(image)


def test_too_small_size_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "root"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(20 << 20))
    dest = tmp_path / "out" / "rootfs.ext4"
    dest.parent.mkdir()
    with pytest.raises(ValidationError) as info:
        build_rootfs(src, dest, size="16M")
    assert info.value.field == "size"
    assert "too small" in info.value.reason and "needs at least" in info.value.reason
    assert list(dest.parent.iterdir()) == []


def test_existing_image_is_replaced_whole(tmp_path: Path) -> None:
    src = tmp_path / "root"
    src.mkdir()
    (src / "v").write_text("2")
    dest = tmp_path / "rootfs.ext4"
    dest.write_text("old content")
    build_rootfs(src, dest)
    assert cat(dest, "/v") == b"2"


@pytest.mark.parametrize(
    ("size", "message"),
    [("12Q", "cannot read"), (0, "must be positive"), ("-5M", "cannot read")],
)
def test_bad_sizes_are_refused(tmp_path: Path, size: int | str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build_rootfs(tmp_path, tmp_path / "img", size=size)


def test_parse_size_units() -> None:
    assert parse_size("1K") == 1024
    assert parse_size("3m") == 3 << 20
    assert parse_size("1GiB") == 1 << 30
    assert parse_size(" 2 G ") == 2 << 30


def test_label_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        build_rootfs(tmp_path, tmp_path / "img", label="x" * 17)
    assert info.value.field == "label"


def test_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(FirecError, match=re.escape(str(tmp_path / "nope"))):
        build_rootfs(tmp_path / "nope", tmp_path / "img")


def test_missing_mkfs_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from firec.images import e2fs

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(e2fs, "_SBIN_DIRS", (str(tmp_path / "no-sbin"),))
    with pytest.raises(FirecError, match=r"mkfs\.ext4 not found.*e2fsprogs"):
        build_rootfs(tmp_path, tmp_path / "img")


def test_not_an_image_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(FirecError, match="not a directory, an OCI image layout or a docker save"):
        build_rootfs(junk, tmp_path / "img")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        add_bytes(tar, "hello.txt", b"hi")
    with pytest.raises(FirecError, match="neither an OCI image layout"):
        build_rootfs(plain, tmp_path / "img")
    assert not (tmp_path / "img").exists()
    assert leftovers(tmp_path) == []


# -- image layers ------------------------------------------------------------------------

# cap_net_raw+ep as Debian's iputils-ping carries it, and a user xattr
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
PING_XATTRS = {
    "SCHILY.xattr.security.capability": CAP_NET_RAW.decode("utf-8", "surrogateescape"),
    "SCHILY.xattr.user.origin": "firec-test",
}

BASE = layer(
    ("dir", "etc"),
    ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ("file", "etc/removed", b"gone soon"),
    ("dir", "opaque"),
    ("file", "opaque/a", b"a"),
    ("dir", "opaque/sub"),
    ("file", "opaque/sub/b", b"b"),
    ("dir", "usr"),
    ("dir", "usr/lib"),
    ("sym", "lib", "usr/lib"),
    ("dir", "usr/bin"),
    ("file", "usr/bin/su", b"\x7fELF...", {"mode": 0o4755}),
    ("link", "usr/bin/su-again", "usr/bin/su"),
    ("file", "usr/bin/ping", b"\x7fELF.", {"mode": 0o755, "pax_headers": PING_XATTRS}),
    ("dir", "home"),
    ("dir", "home/user", {"uid": 1000, "gid": 1000, "mode": 0o700}),
    ("file", "home/user/secret", b"s3cret", {"uid": 1000, "gid": 1000, "mode": 0o600}),
    ("dir", "dev"),
    ("chr", "dev/null", 1, 3),
    ("fifo", "run-fifo"),
    ("dir", "locked", {"mode": 0o500}),
    ("file", "locked/inside", b"ro", {"mode": 0o400}),
)
TOP = layer(
    ("file", "etc/.wh.removed", b""),
    ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\nvm:x:1000:1000::/home/user:/bin/sh\n"),
    ("file", "opaque/.wh..wh..opq", b""),
    ("file", "opaque/c", b"c"),
    # implicit parents, and a path through the in-image symlink lib -> usr/lib
    ("file", "lib/libfirec.so", b"lib"),
    ("file", "var/log/boot.log", b"ok", {"uid": 0, "gid": 4, "mode": 0o640}),
)
THIRD = layer(("file", ".wh.run-fifo", b""), ("file", "etc/motd", b"hello\n"))


def check_layered_image(image: Path) -> None:
    fsck_clean(image)
    etc = listing(image, "/etc")
    assert "removed" not in etc and ".wh.removed" not in etc
    assert cat(image, "/etc/passwd").endswith(b"vm:x:1000:1000::/home/user:/bin/sh\n")
    assert cat(image, "/etc/motd") == b"hello\n"
    opaque = listing(image, "/opaque")
    assert set(opaque) == {".", "..", "c"}
    assert cat(image, "/usr/lib/libfirec.so") == b"lib"
    assert stat.S_ISLNK(listing(image, "/")["lib"][0])
    assert "run-fifo" not in listing(image, "/")
    bins = listing(image, "/usr/bin")
    assert bins["su"] == (0o104755, 0, 0)
    xattrs = debugfs(image, "ea_list /usr/bin/ping")
    assert "security.capability (20) = 01 00 00 02 00 20 00 00" in xattrs
    assert 'user.origin (10) = "firec-test"' in xattrs
    assert "Links: 2" in debugfs(image, "stat /usr/bin/su")
    assert listing(image, "/home")["user"] == (0o40700, 1000, 1000)
    assert listing(image, "/home/user")["secret"] == (0o100600, 1000, 1000)
    assert listing(image, "/var/log")["boot.log"] == (0o100640, 0, 4)
    assert listing(image, "/")["locked"][0] == 0o40500
    assert listing(image, "/locked")["inside"][0] == 0o100400
    null = debugfs(image, "stat /dev/null")
    assert "Type: character special" in null
    assert re.search(r"Device major/minor number: 0*1:0*3", null), null
    assert listing(image, "/dev")["null"][0] == 0o20666
    for directory in ("/", "/etc", "/opaque", "/usr/lib"):
        assert not [n for n in listing(image, directory) if n.startswith(".wh.")]


def test_build_from_oci_layout_applies_layers_and_whiteouts(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "img.tar", [BASE, TOP, THIRD], compress=["gzip", "", "zstd"])
    image = build_rootfs(archive, tmp_path / "rootfs.ext4")
    check_layered_image(image)
    assert leftovers(tmp_path) == []


def test_build_from_oci_layout_directory(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "img.tar", [BASE, TOP, THIRD])
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    check_layered_image(build_rootfs(layout, tmp_path / "rootfs.ext4"))


def test_build_from_docker_save_tarball(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "saved.tar", [BASE, TOP, THIRD])
    image = build_rootfs(archive, tmp_path / "rootfs.ext4", label="docker")
    check_layered_image(image)


def test_gzipped_docker_save_tarball(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "saved.tar", [BASE, TOP, THIRD])
    gz = tmp_path / "saved.tar.gz"
    gz.write_bytes(gzip.compress(archive.read_bytes()))
    check_layered_image(build_rootfs(gz, tmp_path / "rootfs.ext4"))


def test_multi_platform_index_picks_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    archive = oci_archive(
        tmp_path / "img.tar",
        [layer(("file", "right", b"1"))],
        platforms=[("linux", "arm64"), ("linux", "amd64")],
    )
    image = build_rootfs(archive, tmp_path / "rootfs.ext4")
    names = listing(image, "/")
    assert "right" in names and "WRONG-PLATFORM" not in names


def test_docker_save_with_several_images_is_refused(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "saved.tar", [BASE], images=2)
    with pytest.raises(FirecError, match=r"holds 2 images .*test/img0:latest"):
        build_rootfs(archive, tmp_path / "rootfs.ext4")


def test_layer_with_wrong_digest_is_refused(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "img.tar", [BASE, TOP], corrupt_digest=True)
    with pytest.raises(FirecError, match=r"layer 2/2.*does not match its digest"):
        build_rootfs(archive, tmp_path / "rootfs.ext4")
    assert not (tmp_path / "rootfs.ext4").exists()
    assert leftovers(tmp_path) == []


# -- escapes -----------------------------------------------------------------------------


def refused(tmp_path: Path, layers: Sequence[bytes], match: str) -> None:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    archive = docker_save(tmp_path / "evil.tar", layers)
    with pytest.raises(FirecError, match=match):
        build_rootfs(archive, work / "rootfs.ext4")
    assert list(work.iterdir()) == [], "nothing may be left behind"


def test_dotdot_entry_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "escaped"
    name = "../" * 12 + str(outside).lstrip("/")
    refused(
        tmp_path, [layer(("file", "ok", b"1"), ("file", name, b"pwned"))], r"'\.\.' would leave"
    )
    assert not outside.exists()


def test_absolute_entry_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "abs-escaped"
    refused(tmp_path, [layer(("file", str(outside), b"pwned"))], "absolute paths are not allowed")
    assert not outside.exists()


def test_symlink_escaping_the_image_is_refused_as_a_parent(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    climb = "../" * 12 + str(outside).lstrip("/")
    layers = [layer(("sym", "evil", climb)), layer(("file", "evil/pwned", b"pwned"))]
    refused(tmp_path, layers, r"goes through the symlink 'evil' -> .*points outside the image")
    assert list(outside.iterdir()) == []
    # within one layer, and through a chain of links
    layers = [layer(("sym", "a", "b"), ("sym", "b", climb), ("file", "a/pwned", b"x"))]
    refused(tmp_path, layers, "points outside the image")
    assert list(outside.iterdir()) == []


def test_whiteout_through_an_escaping_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    climb = "../" * 12 + str(outside).lstrip("/")
    layers = [layer(("sym", "evil", climb)), layer(("file", "evil/.wh.keep", b""))]
    refused(tmp_path, layers, "points outside the image")
    assert (outside / "keep").read_text() == "precious"


def test_absolute_symlink_parent_resolves_inside_the_image(tmp_path: Path) -> None:
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    layers = [layer(("sym", "shortcut", str(host_dir))), layer(("file", "shortcut/inside", b"in"))]
    image = build_rootfs(docker_save(tmp_path / "img.tar", layers), tmp_path / "rootfs.ext4")
    assert list(host_dir.iterdir()) == [], "the host directory must not be touched"
    assert cat(image, str(host_dir / "inside")) == b"in"
    fsck_clean(image)


def test_entry_replacing_a_symlink_does_not_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("original")
    layers = [layer(("sym", "f", str(victim))), layer(("file", "f", b"new"))]
    image = build_rootfs(docker_save(tmp_path / "img.tar", layers), tmp_path / "rootfs.ext4")
    assert victim.read_text() == "original"
    assert cat(image, "/f") == b"new"


@pytest.mark.parametrize("target", ["../../../etc/passwd", "/etc/passwd"])
def test_hardlink_out_of_the_tree_is_refused(tmp_path: Path, target: str) -> None:
    refused(tmp_path, [layer(("link", "stolen", target))], "refusing|hard link")


def test_hardlink_to_a_missing_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, [layer(("link", "stolen", "etc/shadow"))], "not a file in the image")


# -- without privileges ---------------------------------------------------------------------

_UNPRIVILEGED = """
import sys
from firec.images import build_rootfs
build_rootfs(sys.argv[1], sys.argv[2])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop capabilities")
@pytest.mark.needs_tool("setpriv")
def test_build_without_capabilities_still_sets_owners_and_devices(tmp_path: Path) -> None:
    """With every capability dropped (no chown, no mknod), debugfs sets owners and nodes."""
    archive = oci_archive(tmp_path / "img.tar", [BASE, TOP, THIRD])
    dest = tmp_path / "rootfs.ext4"
    proc = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            sys.executable,
            "-c",
            _UNPRIVILEGED,
            str(archive),
            str(dest),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    check_layered_image(dest)


def test_layer_link_to_a_missing_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("abc/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../missing.tar"
        tar.addfile(link)
        add_bytes(tar, "manifest.json", json.dumps([{"Layers": ["abc/layer.tar"]}]).encode())
    with pytest.raises(FirecError, match=r"names 'abc/layer\.tar', which the archive lacks"):
        build_rootfs(archive, tmp_path / "rootfs.ext4")
    assert not (tmp_path / "rootfs.ext4").exists()


def test_host_errors_become_firec_errors(tmp_path: Path) -> None:
    src = tmp_path / "root"
    src.mkdir()
    with pytest.raises(FirecError, match=r"building .*rootfs\.ext4 from .* failed: No such file"):
        build_rootfs(src, tmp_path / "missing-dir" / "rootfs.ext4")
