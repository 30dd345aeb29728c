"""``firec kernel fetch``: a Debian archive made here (signed with a throwaway key), served on
the loopback, and a kernel at a URL with its SHA-256; then Debian's real signed Release."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from firec.cli import app
from firec.errors import FirecError, ValidationError
from firec.host import debian
from firec.host.kernels import fetch_kernel, kernels_dir, read_kernel
from tests.debian_archive import Archive, Package, SigningKey, deb, serve
from tests.test_kernel_extract import bzimage, tiny_elf

pytestmark = pytest.mark.needs_tool("gpg", "gpgv")

SUITE = "testsuite"
KVER = "6.1.0-99-cloud-amd64"
VMLINUX = tiny_elf()
CONFIG = b"CONFIG_VIRTIO_VSOCKETS=y\nCONFIG_VSOCKETS=y\n"


def kernel_deb(vmlinux: bytes = VMLINUX, kver: str = KVER) -> bytes:
    payload = gzip.compress(vmlinux, mtime=0) + struct.pack("<I", len(vmlinux))
    return deb(
        {
            f"boot/vmlinuz-{kver}": bzimage(payload),
            f"boot/config-{kver}": CONFIG,
            f"boot/System.map-{kver}": b"ffffffff81000000 T _text\n",
            f"lib/modules/{kver}/modules.dep": b"",
        }
    )


def meta(version: str, depends: str) -> Package:
    return Package("linux-image-cloud-amd64", version, deb({"usr/share/doc/x": b""}), depends)


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    signing = SigningKey()
    try:
        yield signing
    finally:
        signing.close()


@pytest.fixture
def archive(key: SigningKey) -> Iterator[Archive]:
    served = Archive(SUITE, key)
    served.publish(
        [
            meta("6.1.99-1", f"linux-image-{KVER} (= 6.1.99-1)"),
            Package(f"linux-image-{KVER}", "6.1.99-1", kernel_deb()),
            Package(f"linux-image-{KVER}", "6.1.98-1", b"an older build, not picked"),
        ]
    )
    with serve(served):
        yield served


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def fetch(archive: Archive, key: SigningKey, **options: object) -> object:
    options.setdefault("keyring", key.keyring)
    return fetch_kernel(mirror=archive.base_url, suite=SUITE, **options)  # type: ignore[arg-type]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_debian_kernel_through_the_signed_index(archive: Archive, key: SigningKey) -> None:
    kernel = fetch_kernel(mirror=archive.base_url, suite=SUITE, keyring=key.keyring)
    assert kernel.directory == kernels_dir() / f"linux-image-{KVER}"
    assert kernel.vmlinux.read_bytes() == VMLINUX  # the bzImage's payload, as an ELF
    assert kernel.config is not None and kernel.config.name == f"config-{KVER}"
    assert kernel.config.read_bytes() == CONFIG
    assert sorted(leftovers(kernel.directory)) == [f"config-{KVER}", "kernel.json", "vmlinux"]
    assert kernel.package == f"linux-image-{KVER} 6.1.99-1"  # the version the meta asks for
    assert (
        kernel.index_signed is True
        and kernel.index == f"{archive.base_url}/dists/{SUITE}/InRelease"
    )
    assert kernel.sha256 == hashlib.sha256(kernel_deb()).hexdigest()
    assert read_kernel(kernel.directory) == kernel
    assert archive.requests == [
        f"/dists/{SUITE}/InRelease",
        f"/dists/{SUITE}/main/binary-amd64/Packages.xz",
        f"/pool/main/l/linux-image-{KVER}_6.1.99-1_amd64.deb",
    ]


def test_the_newest_meta_package_and_its_kernel_are_picked(key: SigningKey, tmp_path: Path) -> None:
    newer = "6.1.0-100-cloud-amd64"
    served = Archive(SUITE, key)
    served.publish(
        [
            meta("6.1.99-1", f"linux-image-{KVER} (= 6.1.99-1)"),
            meta("6.1.100-1~bpo", f"linux-image-{newer}"),
            meta("6.1.100-1", f"linux-image-{newer}"),
            Package(f"linux-image-{KVER}", "6.1.99-1", kernel_deb()),
            Package(f"linux-image-{newer}", "6.1.100-1", kernel_deb(kver=newer)),
        ]
    )
    with serve(served):
        kernel = fetch(served, key, dest=tmp_path / "k")
    assert kernel.package == f"linux-image-{newer} 6.1.100-1"  # type: ignore[attr-defined]


def test_a_second_fetch_reuses_the_kernel(archive: Archive, key: SigningKey) -> None:
    first = fetch(archive, key)
    archive.requests.clear()
    assert fetch(archive, key) == first
    assert not any(r.startswith("/pool/") for r in archive.requests)


def test_a_tampered_release_is_refused(archive: Archive, key: SigningKey) -> None:
    path = f"/dists/{SUITE}/InRelease"
    archive.files[path] = archive.files[path].replace(b"Origin: firec test", b"Origin: mallory")
    with pytest.raises(
        FirecError, match=r"InRelease: no good signature by a key of .*keyring\.gpg"
    ):
        fetch(archive, key)
    assert archive.requests == [path]  # nothing was taken from it
    assert leftovers(kernels_dir()) == []


def test_a_release_signed_by_another_key_is_refused(archive: Archive, tmp_path: Path) -> None:
    other = SigningKey()
    try:
        with pytest.raises(FirecError, match="no good signature"):
            fetch_kernel(mirror=archive.base_url, suite=SUITE, keyring=other.keyring)
    finally:
        other.close()
    assert leftovers(kernels_dir()) == []


def test_an_unsigned_release_is_refused_unless_asked(key: SigningKey, tmp_path: Path) -> None:
    served = Archive(SUITE, None)
    served.publish(
        [meta("1-1", f"linux-image-{KVER}"), Package(f"linux-image-{KVER}", "1-1", kernel_deb())]
    )
    with serve(served):
        with pytest.raises(FirecError, match="no good signature"):
            fetch(served, key)
        kernel = fetch(served, key, verify_index=False)
    assert kernel.index_signed is False  # type: ignore[attr-defined]
    assert json.loads((kernel.directory / "kernel.json").read_text())["index_signed"] is False  # type: ignore[attr-defined]


def test_a_signed_release_read_unverified_is_still_parsed(
    archive: Archive, key: SigningKey
) -> None:
    kernel = fetch(archive, key, verify_index=False, keyring=None)
    assert kernel.vmlinux.read_bytes() == VMLINUX  # type: ignore[attr-defined]


def test_no_gpgv_says_what_to_install(
    archive: Archive, key: SigningKey, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        FirecError, match=r"gpgv is not installed .*apt-get install gpgv.*--no-verify-index"
    ):
        fetch(archive, key)


def test_no_keyring_says_what_to_install(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(FirecError, match=r"no keyring at .*nothing\.gpg .*debian-archive-keyring"):
        fetch_kernel(mirror=archive.base_url, suite=SUITE, keyring=tmp_path / "nothing.gpg")


def test_the_release_of_another_suite_is_refused(key: SigningKey) -> None:
    served = Archive(SUITE, key)
    served.publish([], codename="oldsuite")  # a good signature, on another suite's Release
    text = served.release_text.replace(f"Suite: {SUITE}", "Suite: oldstable")
    served.files[f"/dists/{SUITE}/InRelease"] = key.clearsign(text)
    with serve(served), pytest.raises(FirecError, match="not of 'testsuite'"):
        fetch(served, key)


def test_a_tampered_index_is_refused(archive: Archive, key: SigningKey) -> None:
    path = f"/dists/{SUITE}/main/binary-amd64/Packages.xz"
    archive.files[path] = archive.files[path][:-1] + b"\0"
    with pytest.raises(FirecError, match=r"checksum mismatch for .*Packages\.xz"):
        fetch(archive, key)
    assert not any(r.startswith("/pool/") for r in archive.requests)
    assert leftovers(kernels_dir()) == []


def test_a_tampered_package_is_refused_and_leaves_nothing(
    archive: Archive, key: SigningKey
) -> None:
    path = f"/pool/main/l/linux-image-{KVER}_6.1.99-1_amd64.deb"
    archive.files[path] = kernel_deb(vmlinux=tiny_elf(extra=b"evil"))
    with pytest.raises(FirecError, match=r"checksum mismatch for .*\.deb.*Nothing was kept"):
        fetch(archive, key)
    assert leftovers(kernels_dir()) == []


def test_a_package_without_a_kernel_is_refused(key: SigningKey, tmp_path: Path) -> None:
    served = Archive(SUITE, key)
    served.publish(
        [meta("1-1", f"linux-image-{KVER}"), Package(f"linux-image-{KVER}", "1-1", deb({"x": b""}))]
    )
    with serve(served), pytest.raises(FirecError, match=r"no /boot/vmlinuz-\* file"):
        fetch(served, key, dest=tmp_path / "k")
    assert leftovers(tmp_path) == []


def test_a_meta_package_missing_its_kernel(key: SigningKey) -> None:
    served = Archive(SUITE, key)
    served.publish([meta("1-1", f"linux-image-{KVER} (= 1-1)")])
    with (
        serve(served),
        pytest.raises(FirecError, match=rf"depends on linux-image-{KVER} \(= 1-1\)"),
    ):
        fetch(served, key)


def test_refuses_to_write_over_an_unrelated_directory(
    archive: Archive, key: SigningKey, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FirecError, match="is not a kernel firec fetched"):
        fetch(archive, key, dest=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_progress_bar_follows_both_downloads(archive: Archive, key: SigningKey) -> None:
    with Progress(console=Console(file=io.StringIO())) as progress:
        fetch(archive, key, progress=progress)
    index, package = progress.tasks
    assert index.description == f"Debian {SUITE} index" and index.completed == index.total
    assert package.description == f"linux-image-{KVER}"
    assert package.completed == len(kernel_deb())


# -- any URL, with its SHA-256 ------------------------------------------------------------------


def test_a_kernel_at_a_url_with_its_checksum(key: SigningKey, tmp_path: Path) -> None:
    image = bzimage(gzip.compress(VMLINUX, mtime=0) + struct.pack("<I", len(VMLINUX)))
    served = Archive(SUITE, None, files={"/ci/vmlinux-6.1.102": VMLINUX, "/ci/bzImage": image})
    with serve(served):
        url = f"{served.base_url}/ci/vmlinux-6.1.102"
        kernel = fetch_kernel(url=url, sha256=hashlib.sha256(VMLINUX).hexdigest())
        assert kernel.directory == kernels_dir() / "vmlinux-6.1.102"
        assert kernel.vmlinux.read_bytes() == VMLINUX and kernel.config is None
        assert kernel.package is None and kernel.source == url
        bz = fetch_kernel(
            url=f"{served.base_url}/ci/bzImage",
            sha256=hashlib.sha256(image).hexdigest().upper(),
            dest=tmp_path / "bz",
        )
        assert bz.vmlinux.read_bytes() == VMLINUX
        with pytest.raises(FirecError, match="checksum mismatch"):
            fetch_kernel(url=url, sha256="0" * 64, dest=tmp_path / "bad")
        with pytest.raises(FirecError, match=r"HTTP 404"):
            fetch_kernel(url=f"{served.base_url}/nope", sha256="0" * 64, dest=tmp_path / "nope")
    assert leftovers(tmp_path) == ["bz", "xdg-data"]  # nothing of the refused ones


def test_a_url_that_is_no_kernel_is_refused(tmp_path: Path) -> None:
    served = Archive(SUITE, None, files={"/readme": b"not a kernel at all"})
    with serve(served), pytest.raises(FirecError, match="not an x86 bzImage"):
        fetch_kernel(
            url=f"{served.base_url}/readme",
            sha256=hashlib.sha256(b"not a kernel at all").hexdigest(),
            dest=tmp_path / "k",
        )
    assert leftovers(tmp_path) == []


def test_a_url_needs_a_checksum() -> None:
    with pytest.raises(ValidationError, match="give the SHA-256 of http://x/vmlinux"):
        fetch_kernel(url="http://x/vmlinux")
    with pytest.raises(ValidationError, match="not a SHA-256"):
        fetch_kernel(url="http://x/vmlinux", sha256="abc")
    with pytest.raises(ValidationError, match="--sha256 goes with --url"):
        fetch_kernel(sha256="0" * 64)


# -- the command --------------------------------------------------------------------------------


def test_the_command_prints_where_the_kernel_is(
    archive: Archive, key: SigningKey, tmp_path: Path
) -> None:
    args = ["kernel", "fetch", "--mirror", archive.base_url, "--suite", SUITE]
    args += ["--keyring", str(key.keyring), "--dest", str(tmp_path / "k")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["vmlinux"] == str(tmp_path / "k" / "vmlinux")
    assert shown["config"] == str(tmp_path / "k" / f"config-{KVER}")
    assert shown["index_signed"] is True
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "(signature checked)" in result.stdout


def test_the_command_refuses_a_url_without_checksum() -> None:
    result = CliRunner().invoke(app, ["kernel", "fetch", "--url", "http://127.0.0.1:9/vmlinux"])
    assert result.exit_code == 2
    assert "--sha256" in result.stderr


def test_the_help_says_how_the_index_is_trusted() -> None:
    result = CliRunner().invoke(app, ["kernel", "fetch", "--help"])
    text = " ".join(result.stdout.split())
    assert "gpgv" in text and "debian-archive-keyring.gpg" in text and "--no-verify-index" in text


# -- Debian's own archive -----------------------------------------------------------------------


def test_debians_real_release_verifies_with_the_installed_keyring() -> None:
    if not debian.DEBIAN_KEYRING.is_file():
        pytest.skip(f"no {debian.DEBIAN_KEYRING} (package debian-archive-keyring)")
    try:
        with debian.client() as http:
            release = debian.read_release(http, debian.DEBIAN_MIRROR, "bookworm")
    except FirecError as exc:
        if "cannot reach" in str(exc) or "did not answer" in str(exc):
            pytest.skip(f"the Debian archive is not reachable: {exc}")
        raise
    except httpx.HTTPError as exc:  # pragma: no cover - a transport failure not mapped
        pytest.skip(f"the Debian archive is not reachable: {exc}")
    assert release.signed and release.fields["Codename"] == "bookworm"
    assert "main/binary-amd64/Packages.xz" in release.sha256
