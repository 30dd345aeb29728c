"""Read container images: OCI image layouts and ``docker save`` tarballs.

:func:`unpack_image` finds an image's layers, in order, and applies them to a
:class:`~firec.images.layers.StagingTree`. It understands:

* an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``), as a tar
  archive (``skopeo copy ... oci-archive:img.tar``, ``docker buildx --output
  type=oci``) or as a directory;
* a ``docker save`` tarball (``manifest.json`` and the layer tars; Docker 25+
  writes an OCI layout and a ``manifest.json`` side by side).

Layers may be plain, gzip or zstd tars; blobs named by a sha256 digest are
checked against it. An index holding several platforms is resolved to this
host's (``linux`` and its architecture).

Example::

    >>> from firec.images.layers import StagingTree
    >>> tree = StagingTree(Path("/tmp/staging"))  # doctest: +SKIP
    >>> unpack_image(Path("alpine.tar"), tree)  # doctest: +SKIP
    3
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import platform
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast

import zstandard

from firec.errors import FirecError
from firec.images.layers import LayerOpener, StagingTree

__all__ = ["is_oci_layout_dir", "unpack_image", "unpack_image_with_config"]

_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$")
_BLOB_PATH = re.compile(r"^blobs/(sha256|sha512)/([a-f0-9]{64}|[a-f0-9]{128})$")
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class _Source(Protocol):
    """Files of an image, in a tar archive or a directory."""

    def has(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


class _TarSource:
    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self._tar = tar
        self._path = path
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
            if member.isfile() or member.issym() or member.islnk():  # docker save links layers
                self._members[name] = member

    def has(self, name: str) -> bool:
        return name in self._members

    def open(self, name: str) -> IO[bytes]:
        member = self._members.get(name)
        try:
            stream = self._tar.extractfile(member) if member is not None else None
        except KeyError:  # a link to a member the archive lacks
            stream = None
        if stream is None:
            raise FirecError(f"{self._path}: the image names {name!r}, which the archive lacks")
        return stream


class _DirSource:
    def __init__(self, path: Path) -> None:
        self._path = path

    def has(self, name: str) -> bool:
        return (self._path / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        try:
            return (self._path / name).open("rb")
        except OSError as exc:
            raise FirecError(f"{self._path}: cannot read {name}: {exc.strerror or exc}") from exc


def is_oci_layout_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding an OCI image layout."""
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


def unpack_image(source: Path, tree: StagingTree) -> int:
    """Apply the layers of the image at ``source`` to ``tree``; return how many there were.

    Raises:
        FirecError: not an image this understands, a missing or corrupt blob,
            an unsafe layer entry; the message names the file and the layer.
    """
    return unpack_image_with_config(source, tree)[0]


def unpack_image_with_config(source: Path, tree: StagingTree) -> tuple[int, dict[str, Any] | None]:
    """Like :func:`unpack_image`, and the image's config (entrypoint, env...), if it names one.

    The config is the OCI image config (``docker save`` writes the same): its
    ``config`` object holds ``Entrypoint``, ``Cmd``, ``Env``, ``WorkingDir``
    and ``User``. An OCI config blob is checked against its digest.
    """
    if source.is_dir():
        return _unpack(_DirSource(source), source, tree)
    try:
        tar = tarfile.open(source, mode="r:*")  # noqa: SIM115 - closed just below
    except (OSError, tarfile.TarError) as exc:
        raise FirecError(
            f"{source}: not a directory, an OCI image layout or a docker save tarball ({exc})"
        ) from exc
    with tar:
        try:
            return _unpack(_TarSource(tar, source), source, tree)
        except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a host error (disk full...), not a corrupt archive
            raise FirecError(f"{source}: corrupt archive: {exc}") from exc


def _unpack(src: _Source, path: Path, tree: StagingTree) -> tuple[int, dict[str, Any] | None]:
    layers, config_ref = _layers(src, path)
    config = None
    if config_ref is not None:
        name, digest = config_ref
        loaded = _load_json(src, name, path, digest=digest)
        if not isinstance(loaded, dict):
            raise FirecError(f"{path}: the image config {name} is not a JSON object")
        config = loaded
    for number, (name, layer_digest) in enumerate(layers, start=1):
        where = f"{path} layer {number}/{len(layers)} ({name})"
        tree.apply_layer(_opener(src, name, layer_digest, where), where)
    tree.finish()
    return len(layers), config


_Ref = tuple[str, str | None]


def _layers(src: _Source, path: Path) -> tuple[list[_Ref], _Ref | None]:
    """The image's layer files, lowest first, each with the digest to check (if any); its config."""
    if src.has("manifest.json"):
        return _docker_layers(src, path)
    if src.has("index.json"):
        return _oci_layers(src, path)
    raise FirecError(
        f"{path}: neither an OCI image layout (no index.json) nor a docker save "
        "tarball (no manifest.json)"
    )


def _docker_layers(src: _Source, path: Path) -> tuple[list[_Ref], _Ref | None]:
    manifest = _load_json(src, "manifest.json", path)
    if not isinstance(manifest, list) or not manifest:
        raise FirecError(f"{path}: manifest.json lists no image")
    if len(manifest) > 1:
        tags = [", ".join(entry.get("RepoTags") or ["<untagged>"]) for entry in manifest]
        raise FirecError(
            f"{path}: holds {len(manifest)} images ({'; '.join(tags)}); "
            "save one image per tarball (docker save IMAGE)"
        )
    layers = manifest[0].get("Layers") if isinstance(manifest[0], dict) else None
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise FirecError(f"{path}: manifest.json has no Layers list")
    out: list[tuple[str, str | None]] = []
    for name in layers:
        clean = "/".join(p for p in name.split("/") if p not in ("", "."))
        if ".." in clean.split("/"):
            raise FirecError(f"{path}: manifest.json names a layer outside the archive: {name!r}")
        match = _BLOB_PATH.match(clean)
        out.append((clean, f"{match[1]}:{match[2]}" if match else None))
    config = manifest[0].get("Config")
    if not isinstance(config, str) or not config:
        return out, None
    clean = "/".join(p for p in config.split("/") if p not in ("", "."))
    if ".." in clean.split("/"):
        raise FirecError(f"{path}: manifest.json names a config outside the archive: {config!r}")
    match = _BLOB_PATH.match(clean)
    return out, (clean, f"{match[1]}:{match[2]}" if match else None)


def _oci_layers(src: _Source, path: Path) -> tuple[list[_Ref], _Ref | None]:
    index = _load_json(src, "index.json", path)
    manifest = _pick_manifest(src, path, index, "index.json")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise FirecError(f"{path}: the image manifest has no layers list")
    out: list[tuple[str, str | None]] = []
    for layer in layers:
        digest = _digest_of(layer, path)
        out.append((_blob_name(digest), digest))
    descriptor = manifest.get("config")
    if descriptor is None:
        return out, None
    digest = _digest_of(descriptor, path)
    return out, (_blob_name(digest), digest)


def _pick_manifest(
    src: _Source, path: Path, index: Any, what: str, depth: int = 0
) -> dict[str, Any]:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise FirecError(f"{path}: {what} lists no manifest")
    candidates = [m for m in manifests if isinstance(m, dict) and not _is_attestation(m)]
    if len(candidates) > 1:
        arch = _GOARCH.get(platform.machine(), platform.machine())
        matching = [m for m in candidates if _platform_of(m) == ("linux", arch)]
        if not matching:
            found = ", ".join("/".join(_platform_of(m) or ("?",)) for m in candidates)
            raise FirecError(
                f"{path}: {what} holds {len(candidates)} images ({found}) and none is linux/{arch}"
            )
        candidates = matching[:1]
    if not candidates:
        raise FirecError(f"{path}: {what} lists no usable manifest")
    chosen = candidates[0]
    digest = _digest_of(chosen, path)
    blob = _load_json(src, _blob_name(digest), path, digest=digest)
    if not isinstance(blob, dict):
        raise FirecError(f"{path}: manifest {digest} is not a JSON object")
    media_type = chosen.get("mediaType") or blob.get("mediaType")
    if media_type in _INDEX_TYPES or "manifests" in blob:
        if depth > 4:
            raise FirecError(f"{path}: image indexes nest too deeply")
        return _pick_manifest(src, path, blob, f"index {digest}", depth + 1)
    return blob


def _is_attestation(descriptor: dict[str, Any]) -> bool:
    annotations = descriptor.get("annotations") or {}
    return isinstance(annotations, dict) and "vnd.docker.reference.type" in annotations


def _platform_of(descriptor: dict[str, Any]) -> tuple[str, str] | None:
    plat = descriptor.get("platform")
    if not isinstance(plat, dict):
        return None
    return str(plat.get("os", "?")), str(plat.get("architecture", "?"))


def _digest_of(descriptor: Any, path: Path) -> str:
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise FirecError(f"{path}: invalid or unsupported digest {digest!r}")
    return digest


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _load_json(src: _Source, name: str, path: Path, *, digest: str | None = None) -> Any:
    if not src.has(name):
        raise FirecError(f"{path}: {name} is missing")
    with src.open(name) as fh:
        data = fh.read(64 << 20)
    if digest is not None:
        algorithm, _, expected = digest.partition(":")
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected:
            raise FirecError(f"{path}: {name} does not match its digest (got {algorithm}:{actual})")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FirecError(f"{path}: {name} is not valid JSON: {exc}") from exc


def _opener(src: _Source, name: str, digest: str | None, where: str) -> LayerOpener:
    if not src.has(name):
        raise FirecError(f"{where}: the archive lacks this layer")

    @contextlib.contextmanager
    def open_layer() -> Iterator[IO[bytes]]:
        with src.open(name) as raw:
            hashed = _HashingReader(raw, digest.partition(":")[0] if digest else "sha256")
            head = hashed.peek(4)
            stream: IO[bytes]
            if head[:2] == b"\x1f\x8b":
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=hashed, mode="rb"))
            elif head == b"\x28\xb5\x2f\xfd":
                reader = zstandard.ZstdDecompressor().stream_reader(
                    cast(IO[bytes], hashed), closefd=False
                )
                stream = cast(IO[bytes], reader)
            else:
                stream = cast(IO[bytes], hashed)
            with stream:
                yield stream
            if digest is not None:
                actual = hashed.finish()
                expected = digest.partition(":")[2]
                if actual != expected:
                    raise FirecError(
                        f"{where}: the layer does not match its digest {digest} (corrupt or "
                        "tampered archive)"
                    )

    return open_layer


class _HashingReader(io.RawIOBase):
    """Pass reads through while hashing them; :meth:`finish` drains and gives the digest."""

    def __init__(self, raw: IO[bytes], algorithm: str) -> None:
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        while len(self._pending) < size:
            chunk = self._raw.read(size - len(self._pending))
            if not chunk:
                break
            self._pending += chunk
        return self._pending[:size]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pending:
            n = min(len(view), len(self._pending))
            data, self._pending = self._pending[:n], self._pending[n:]
        else:
            data = self._raw.read(len(view))
            n = len(data)
        view[:n] = data
        self._hash.update(data)
        return n

    def close(self) -> None:  # the underlying file is closed by its owner
        super().close()

    def finish(self) -> str:
        self._hash.update(self._pending)
        self._pending = b""
        while chunk := self._raw.read(1 << 20):
            self._hash.update(chunk)
        return self._hash.hexdigest()
