"""Files in the guest, through the agent: ``client.files``.

Every transfer is streamed in frames of at most 1 MiB, never held whole:
:meth:`Files.write` takes bytes, text, a binary file object or an iterable
of chunks; :meth:`Files.upload` and :meth:`Files.download` move a local file
or a whole directory (as a tar stream). A failed write or download leaves
nothing behind on either side. Local files are read and written as they
come, a frame at a time (on the asyncio client too: briefly, in the loop).
"""

# This file is the one source of both flavours: files.py (the synchronous
# one) is generated from it by scripts/unasync.py.

from __future__ import annotations

import builtins
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from firec.agent import _tar, protocol
from firec.agent.protocol import Payload
from firec.agent.results import FileInfo
from firec.errors import AgentError

__all__ = ["Data", "Files"]

#: What :meth:`Files.write` takes.
Data = bytes | bytearray | memoryview | str | IO[bytes] | Iterable[bytes]


class _Session(Protocol):
    """What :class:`Files` needs of its client."""

    async def _call(
        self,
        message: Mapping[str, Any],
        *,
        op: str,
        target: str,
        send: Iterable[bytes] | None = None,
        receive: Callable[[Payload], None] | None = None,
    ) -> dict[str, Any]: ...


def chunks(data: Data) -> Iterator[bytes]:
    """``data`` in pieces of at most one frame."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), protocol.MAX_FRAME):
            yield bytes(view[start : start + protocol.MAX_FRAME])
        return
    read = getattr(data, "read", None)
    if read is not None:
        while block := read(protocol.MAX_FRAME):
            yield block
        return
    for piece in data:
        yield from chunks(bytes(piece))


def _path(path: str | os.PathLike[str]) -> str:
    return os.fsdecode(path)


class Files:
    """The guest's files: ``client.files`` (on a machine, later, ``machine.files``).

    Paths are guest paths, absolute (a relative one is taken from the agent's
    root, ``/`` by default). Errors are :class:`~firec.errors.AgentError`
    with the agent's code (``not_found``, ``permission``, ``is_a_directory``,
    ``outside_root``...) and its own message.
    """

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def write(
        self,
        path: str | os.PathLike[str],
        data: Data,
        *,
        mode: int = 0o644,
        parents: bool = False,
        append: bool = False,
    ) -> int:
        """Write ``data`` to the file ``path``; the number of bytes written.

        The file is replaced at once when all is written (unless ``append``);
        ``parents`` makes the missing directories above it.
        """
        where = _path(path)
        message = {"op": "write", "path": where, "mode": mode, "parents": parents, "append": append}
        reply = await self._session._call(message, op="write", target=where, send=chunks(data))
        return int(reply.get("size", 0))

    async def read(
        self, path: str | os.PathLike[str], *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """The bytes of the file ``path`` (from ``offset``, at most ``length`` of them)."""
        where = _path(path)
        pieces: list[Payload] = []
        message: dict[str, Any] = {"op": "read", "path": where, "offset": offset}
        if length is not None:
            message["length"] = length
        await self._session._call(message, op="read", target=where, receive=pieces.append)
        return b"".join(pieces)

    async def stat(self, path: str | os.PathLike[str], *, follow: bool = True) -> FileInfo:
        """What ``path`` is (``follow=False``: a symlink itself, not what it points to)."""
        where = _path(path)
        message = {"op": "stat", "path": where, "follow": follow}
        return FileInfo.from_json(await self._session._call(message, op="stat", target=where))

    async def exists(self, path: str | os.PathLike[str]) -> bool:
        """``path`` exists (a dangling symlink does not)."""
        try:
            await self.stat(path)
        except AgentError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    async def list(self, path: str | os.PathLike[str]) -> builtins.list[FileInfo]:
        """The entries of the directory ``path`` (not ``.`` and ``..``), sorted by name."""
        where = _path(path)
        pieces: list[Payload] = []
        message = {"op": "list", "path": where}
        await self._session._call(message, op="list", target=where, receive=pieces.append)
        lines = b"".join(pieces).splitlines()
        entries = [FileInfo.from_json(json.loads(line)) for line in lines if line]
        return sorted(entries, key=lambda entry: entry.name)

    async def mkdir(
        self,
        path: str | os.PathLike[str],
        *,
        parents: bool = False,
        mode: int = 0o755,
        exist_ok: bool = False,
    ) -> None:
        """Make the directory ``path`` (``parents``: and those above it, like ``mkdir -p``)."""
        where = _path(path)
        message = {"op": "mkdir", "path": where, "parents": parents, "mode": mode}
        try:
            await self._session._call(message, op="mkdir", target=where)
        except AgentError as exc:
            if not (exist_ok and exc.code == "exists" and (await self.stat(where)).is_dir):
                raise

    async def remove(
        self, path: str | os.PathLike[str], *, recursive: bool = False, missing_ok: bool = False
    ) -> None:
        """Remove the file or (empty, or with ``recursive``) directory ``path``."""
        where = _path(path)
        message = {"op": "remove", "path": where, "recursive": recursive}
        try:
            await self._session._call(message, op="remove", target=where)
        except AgentError as exc:
            if not (missing_ok and exc.code == "not_found"):
                raise

    async def chmod(self, path: str | os.PathLike[str], mode: int) -> None:
        """Set the permission bits of ``path``."""
        where = _path(path)
        await self._session._call(
            {"op": "chmod", "path": where, "mode": mode}, op="chmod", target=where
        )

    async def upload(
        self, local: str | os.PathLike[str], remote: str | os.PathLike[str], *, parents: bool = True
    ) -> None:
        """Copy the local file or directory ``local`` to ``remote`` in the guest.

        A file becomes the file ``remote`` (with its mode); a directory's
        contents go into the directory ``remote``, made if missing (into a
        new one at once, when all of it is there).
        """
        source = Path(local)
        where = _path(remote)
        if source.is_dir():
            await self._session._call(
                {"op": "write_tar", "path": where},
                op="upload",
                target=where,
                send=_tar.tar_stream(source),
            )
            return
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed below, after the transfer
        except OSError as exc:
            why = f"cannot read {source}: {exc.strerror}"
            raise AgentError("local", why, op="upload") from None
        with handle:
            mode = os.fstat(handle.fileno()).st_mode & 0o7777
            message = {"op": "write", "path": where, "mode": mode, "parents": parents}
            await self._session._call(message, op="upload", target=where, send=chunks(handle))

    async def download(self, remote: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
        """Copy the guest's file or directory ``remote`` to ``local`` on this host.

        A file becomes the file ``local``; a directory's contents go into the
        directory ``local``, made if missing. Into a new file or directory,
        nothing is left when it fails.
        """
        where = _path(remote)
        info = await self.stat(where)
        target = Path(local)
        if not info.is_dir:
            await self._download_file(where, target, info.mode)
            return
        fresh = not target.exists()
        into = (
            Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            if fresh
            else target
        )
        try:
            extractor = _tar.TarExtractor(into)
            try:
                message = {"op": "read_tar", "path": where}
                await self._session._call(
                    message, op="download", target=where, receive=extractor.feed
                )
            finally:
                extractor.close()
            if fresh:
                into.rename(target)
        except BaseException:
            if fresh:
                _remove_tree(into)
            raise

    async def _download_file(self, where: str, target: Path, mode: int) -> None:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
            prefix=f".{target.name}.", dir=target.parent, delete=False
        )

        def write(data: Payload) -> None:
            handle.write(data)

        try:
            with handle:
                message = {"op": "read", "path": where}
                await self._session._call(message, op="download", target=where, receive=write)
            os.chmod(handle.name, mode)
            os.replace(handle.name, target)
        except BaseException:
            os.unlink(handle.name)
            raise


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
