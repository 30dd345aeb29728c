"""install_firecracker against a release server on 127.0.0.1 (never the internet).

The server lays out a synthetic release the way GitHub does:
``<base>/<version>/firecracker-<version>-<arch>.tgz`` and its ``.sha256.txt``.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from firec.errors import FirecError, ValidationError
from firec.host.install import (
    PINNED_VERSION,
    bin_dir,
    data_dir,
    install_firecracker,
    installed_releases,
    normalize_arch,
)

VERSION = "v1.14.2"
ARCH = "x86_64"
ARCHIVE = f"firecracker-{VERSION}-{ARCH}.tgz"


def release_archive(version: str = VERSION, arch: str = ARCH, *, with_jailer: bool = True) -> bytes:
    """A .tgz shaped like Firecracker's: release-<v>-<arch>/<tool>-<v>-<arch> and friends."""
    buf = io.BytesIO()
    top = f"release-{version}-{arch}"
    tools = ["firecracker", "jailer", "seccompiler-bin"] if with_jailer else ["firecracker"]
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for tool in tools:
            name = "Jailer" if tool == "jailer" else "Firecracker"
            script = f"#!/bin/sh\necho '{name} {version}'\n".encode()
            info = tarfile.TarInfo(f"{top}/{tool}-{version}-{arch}")
            info.size = len(script)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(script))
        notes = b"release notes\n"
        info = tarfile.TarInfo(f"{top}/RELEASE_NOTES")
        info.size = len(notes)
        tar.addfile(info, io.BytesIO(notes))
    return buf.getvalue()


@dataclass
class ReleaseServer:
    base_url: str
    routes: dict[str, bytes | int | str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(
        self, archive: bytes, *, checksum: str | None = None, version: str = VERSION
    ) -> None:
        name = f"firecracker-{version}-{ARCH}.tgz"
        digest = checksum or hashlib.sha256(archive).hexdigest()
        # GitHub answers release downloads with a redirect to its object store
        self.routes[f"/{version}/{name}"] = f"/objects/{name}"
        self.routes[f"/objects/{name}"] = archive
        self.routes[f"/{version}/{name}.sha256.txt"] = f"{digest}  {name}\n".encode()


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    state = ReleaseServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path, 404)
            if isinstance(route, str):
                self.send_response(302)
                self.send_header("Location", route)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif isinstance(route, int):
                self.send_response(route)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(route)))
                self.end_headers()
                self.wfile.write(route)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_checksum_installs(server: ReleaseServer, data_home: Path) -> None:
    archive = release_archive()
    server.publish(archive)
    release = install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)

    assert data_dir() == data_home / "firec"
    assert release.directory == bin_dir() / VERSION == data_home / "firec/bin/v1.14.2"
    assert release.sha256 == hashlib.sha256(archive).hexdigest()
    assert release.source == f"{server.base_url}/{VERSION}/{ARCHIVE}"
    out = subprocess.run([release.firecracker, "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == "Firecracker v1.14.2"
    out = subprocess.run([release.jailer, "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == "Jailer v1.14.2"
    assert sorted(p.name for p in release.directory.iterdir()) == [
        "firecracker",
        "jailer",
        "release.json",
    ]
    assert leftovers(bin_dir()) == ["v1.14.2"]
    assert installed_releases() == [release]
    assert server.requests == [
        f"/{VERSION}/{ARCHIVE}.sha256.txt",
        f"/{VERSION}/{ARCHIVE}",
        f"/objects/{ARCHIVE}",
    ]


def test_bad_checksum_is_refused_and_leaves_nothing(server: ReleaseServer) -> None:
    server.publish(release_archive(), checksum="0" * 64)
    with pytest.raises(
        FirecError, match=r"checksum mismatch .*expected sha256 0{64}, got [0-9a-f]{64}"
    ):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    assert leftovers(bin_dir()) == []
    assert installed_releases() == []


def test_tampered_archive_is_refused(server: ReleaseServer) -> None:
    archive = release_archive()
    server.publish(archive)
    server.routes[f"/objects/{ARCHIVE}"] = release_archive(with_jailer=False)
    with pytest.raises(FirecError, match=r"checksum mismatch.*Nothing was installed"):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    assert leftovers(bin_dir()) == []


def test_pinned_checksum_is_used_instead_of_the_published_one(server: ReleaseServer) -> None:
    archive = release_archive()
    server.publish(archive, checksum="f" * 64)  # the published file is wrong; the pin is right
    pin = hashlib.sha256(archive).hexdigest()
    release = install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, sha256=pin.upper())
    assert release.sha256 == pin
    assert not any(r.endswith(".sha256.txt") for r in server.requests)


def test_wrong_pin_is_refused(server: ReleaseServer) -> None:
    server.publish(release_archive())
    with pytest.raises(FirecError, match="checksum mismatch"):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, sha256="a" * 64)
    assert leftovers(bin_dir()) == []


def test_offline_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FirecError) as info:
        install_firecracker(VERSION, arch=ARCH, base_url=f"http://127.0.0.1:{port}")
    message = str(info.value)
    assert message.startswith("cannot reach 127.0.0.1: ")
    assert "(offline?)" in message and "set FIRECRACKER_BIN" in message
    assert leftovers(bin_dir()) == []


def test_missing_release_is_reported(server: ReleaseServer) -> None:
    with pytest.raises(FirecError, match=r"v9\.9\.9/firecracker-v9\.9\.9-x86_64\.tgz.*HTTP 404"):
        install_firecracker("9.9.9", arch=ARCH, base_url=server.base_url)
    assert leftovers(bin_dir()) == []


def test_server_error_is_reported(server: ReleaseServer) -> None:
    server.publish(release_archive())
    server.routes[f"/objects/{ARCHIVE}"] = 503
    with pytest.raises(FirecError, match="HTTP 503"):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    assert leftovers(bin_dir()) == []


def test_archive_without_jailer_is_refused(server: ReleaseServer) -> None:
    server.publish(release_archive(with_jailer=False))
    with pytest.raises(FirecError, match=re.escape("the archive lacks jailer-v1.14.2-x86_64")):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    assert leftovers(bin_dir()) == []


def test_checksum_file_for_another_archive_is_refused(server: ReleaseServer) -> None:
    server.publish(release_archive())
    digest = hashlib.sha256(release_archive()).hexdigest()
    server.routes[f"/{VERSION}/{ARCHIVE}.sha256.txt"] = f"{digest}  something-else.tgz\n".encode()
    with pytest.raises(FirecError, match=re.escape("the checksum is for 'something-else.tgz'")):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)


def test_existing_install_is_reused_without_downloading(server: ReleaseServer) -> None:
    server.publish(release_archive())
    first = install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    server.requests.clear()
    assert install_firecracker(VERSION, arch=ARCH, base_url=server.base_url) == first
    assert server.requests == []


def test_broken_install_is_replaced(server: ReleaseServer) -> None:
    server.publish(release_archive())
    broken = bin_dir() / VERSION
    broken.mkdir(parents=True)
    (broken / "firecracker").write_text("half a binary")
    release = install_firecracker(VERSION, arch=ARCH, base_url=server.base_url)
    assert release.directory == broken
    assert (broken / "jailer").exists()
    assert leftovers(bin_dir()) == [VERSION]


def test_failed_reinstall_keeps_the_old_one(server: ReleaseServer, tmp_path: Path) -> None:
    server.publish(release_archive())
    dest = tmp_path / "fc"
    first = install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, dest=dest)
    with pytest.raises(FirecError, match="checksum mismatch"):
        install_firecracker(
            VERSION, arch=ARCH, base_url=server.base_url, dest=dest, sha256="b" * 64
        )
    assert installed_releases(tmp_path) == [first]
    assert leftovers(tmp_path) == ["fc"]


def test_progress_bar_follows_the_download(server: ReleaseServer) -> None:
    archive = release_archive()
    server.publish(archive)
    console = Console(file=io.StringIO(), force_terminal=False)
    with Progress(console=console) as progress:
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, progress=progress)
    (task,) = progress.tasks
    assert task.total == len(archive)
    assert task.completed == len(archive)
    assert "firecracker v1.14.2" in task.description


def test_version_and_arch_spellings(server: ReleaseServer) -> None:
    server.publish(release_archive())
    assert install_firecracker("1.14.2", arch="amd64", base_url=server.base_url).version == VERSION
    assert normalize_arch("arm64") == "aarch64"
    assert PINNED_VERSION.startswith("v1.")


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"version": "latest"}, "version"),
        ({"version": "v1.14"}, "version"),
        ({"arch": "riscv64"}, "arch"),
        ({"sha256": "abc"}, "sha256"),
    ],
)
def test_bad_arguments_are_refused_before_any_download(
    server: ReleaseServer, kwargs: dict[str, str], field_name: str
) -> None:
    with pytest.raises(ValidationError) as info:
        install_firecracker(base_url=server.base_url, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field_name
    assert server.requests == []


def test_refuses_to_install_over_an_unrelated_directory(
    server: ReleaseServer, tmp_path: Path
) -> None:
    server.publish(release_archive())
    precious = tmp_path / "bin"
    precious.mkdir()
    (precious / "my-tool").write_text("keep me")
    with pytest.raises(FirecError, match="is not a firec install"):
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, dest=precious)
    assert [p.name for p in precious.iterdir()] == ["my-tool"]
    assert server.requests == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        install_firecracker(VERSION, arch=ARCH, base_url=server.base_url, dest=empty).directory
        == empty
    )


def test_docstring_examples() -> None:
    import doctest

    import firec.host.install

    result = doctest.testmod(firec.host.install)
    assert result.failed == 0 and result.attempted > 0
