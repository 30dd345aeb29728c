"""A small Debian archive made in a test, served over HTTP on the loopback.

:func:`deb` writes a real ``.deb`` (ar + tar.xz members, as dpkg-deb does);
:class:`Archive` lays out ``dists/<suite>/{InRelease,main/binary-amd64/Packages.xz}``
and ``pool/`` for the packages it is given, its InRelease clear-signed with a
throwaway GnuPG key (:class:`SigningKey`), and serves it (:func:`serve`).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
        out += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        directories = sorted({str(Path(n).parent) for n in files} - {"."})
        for directory in directories:
            info = tarfile.TarInfo(f"./{directory}")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deb(files: dict[str, bytes], control: str = "Package: x\n") -> bytes:
    """A Debian package installing ``files`` (paths without a leading slash)."""
    return ar(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", _tar_xz({"control": control.encode()})),
            ("data.tar.xz", _tar_xz(files)),
        ]
    )


class SigningKey:
    """A throwaway GnuPG key in a directory of its own; :meth:`close` ends its agent."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="firec-gpg-", dir="/tmp"))  # short: sockets
        os.chmod(self.home, 0o700)
        self._gpg(
            "--passphrase", "", "--quick-gen-key", "firec test <test@firec.invalid>",
            "ed25519", "sign", "never",
        )  # fmt: skip
        self.keyring = self.home / "keyring.gpg"
        self.keyring.write_bytes(self._gpg("--export").stdout)

    def _gpg(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", *args],
            input=stdin,
            capture_output=True,
            check=True,
            timeout=120,
        )

    def clearsign(self, text: str) -> bytes:
        return self._gpg("--clearsign", stdin=text.encode()).stdout

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class Package:
    name: str
    version: str
    data: bytes
    depends: str = ""


@dataclass
class Archive:
    """The files of an archive with one suite, by URL path (``/dists/...``, ``/pool/...``)."""

    suite: str
    key: SigningKey | None
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def publish(self, packages: list[Package], *, codename: str | None = None) -> None:
        """Write the pool, the Packages index and the (signed) Release for ``packages``."""
        stanzas = []
        for package in packages:
            path = f"pool/main/l/{package.name}_{package.version}_amd64.deb"
            self.files[f"/{path}"] = package.data
            lines = [
                f"Package: {package.name}",
                f"Version: {package.version}",
                "Architecture: amd64",
                "Description: test package",
                " with a continuation line",
            ]
            if package.depends:
                lines.append(f"Depends: {package.depends}")
            lines += [
                f"Filename: {path}",
                f"Size: {len(package.data)}",
                f"SHA256: {hashlib.sha256(package.data).hexdigest()}",
            ]
            stanzas.append("\n".join(lines) + "\n")
        index = lzma.compress("\n".join(stanzas).encode(), format=lzma.FORMAT_XZ)
        index_path = "main/binary-amd64/Packages.xz"
        self.files[f"/dists/{self.suite}/{index_path}"] = index
        release = (
            f"Origin: firec test\nSuite: {self.suite}\nCodename: {codename or self.suite}\n"
            "Architectures: amd64\nComponents: main\nSHA256:\n"
            f" {hashlib.sha256(index).hexdigest()} {len(index)} {index_path}\n"
        )
        self.release_text = release
        signed = self.key.clearsign(release) if self.key else release.encode()
        self.files[f"/dists/{self.suite}/InRelease"] = signed


@contextmanager
def serve(archive: Archive) -> Iterator[Archive]:
    """Serve ``archive`` on 127.0.0.1 (its :attr:`Archive.base_url`) while in the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            archive.requests.append(self.path)
            body = archive.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    archive.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield archive
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
