"""What the agent answers, as values: a command's result, a file's metadata, the agent itself.

Example::

    >>> result = ExecResult(argv=("false",), exit_code=1, stdout=b"", stderr=b"", pid=7)
    >>> result.ok
    False
    >>> result.check()
    Traceback (most recent call last):
    ...
    firec.errors.CommandError: exec false: exited with status 1
"""

from __future__ import annotations

import stat as stat_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firec.errors import CommandError, CommandTimeoutError

__all__ = ["AgentInfo", "ExecResult", "FileInfo"]


@dataclass(frozen=True)
class ExecResult:
    """How a command run through the agent ended, and what it wrote.

    Attributes:
        argv: the command.
        exit_code: its exit status; ``-N`` when signal ``N`` ended it (as
            :mod:`subprocess` says it).
        stdout: what it wrote on stdout (with a PTY: everything it wrote),
            less what was read from the process handle before it ended.
        stderr: what it wrote on stderr.
        pid: its process id in the guest.
        signal: the signal that ended it, if one did.
        timed_out: the agent killed it when its timeout ran out.
        timeout: that timeout, in seconds.
    """

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes
    pid: int
    signal: int | None = None
    timed_out: bool = False
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        """It exited with status 0."""
        return self.exit_code == 0

    def check(self) -> ExecResult:
        """This result when the command succeeded; else :class:`~firec.errors.CommandError`.

        A command the agent killed at its timeout raises
        :class:`~firec.errors.CommandTimeoutError` (whatever ``check``).
        """
        if self.timed_out:
            raise CommandTimeoutError(self.argv, self.timeout or 0.0, result=self)
        if self.exit_code != 0:
            if self.signal is not None:
                why = f"was killed by signal {self.signal}"
            else:
                why = f"exited with status {self.exit_code}"
            tail = self.stderr[-400:].decode(errors="replace").strip()
            raise CommandError(self.argv, why + (f": {tail}" if tail else ""), result=self)
        return self

    @classmethod
    def from_reply(
        cls,
        argv: tuple[str, ...],
        pid: int,
        reply: Mapping[str, Any],
        stdout: bytes,
        stderr: bytes,
        timeout: float | None,
    ) -> ExecResult:
        """The result from the agent's final exec reply."""
        signal = reply.get("signal")
        code = reply.get("exit_code")
        exit_code = int(code) if code is not None else -int(signal or 0)
        return cls(
            argv=argv,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            pid=pid,
            signal=int(signal) if signal is not None else None,
            timed_out=bool(reply.get("timed_out")),
            timeout=timeout,
        )


@dataclass(frozen=True)
class FileInfo:
    """A file in the guest, as ``stat`` and ``list`` describe it.

    Attributes:
        name: its last path component.
        type: ``"file"``, ``"directory"``, ``"symlink"``, ``"char_device"``,
            ``"block_device"``, ``"fifo"`` or ``"socket"``.
        size: in bytes.
        mode: its permission bits (``0o644``).
        uid, gid: its owner.
        mtime: its modification time (seconds since the epoch).
        target: where a symlink points.
        path: its full path, when asked for by path (``stat``).
    """

    name: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    target: str | None = None
    path: str | None = None

    @property
    def is_dir(self) -> bool:
        """It is a directory."""
        return self.type == "directory"

    @property
    def is_file(self) -> bool:
        """It is a regular file."""
        return self.type == "file"

    @property
    def filemode(self) -> str:
        """Its type and mode as ``ls -l`` shows them (``-rw-r--r--``)."""
        kinds = {
            "file": stat_module.S_IFREG,
            "directory": stat_module.S_IFDIR,
            "symlink": stat_module.S_IFLNK,
            "char_device": stat_module.S_IFCHR,
            "block_device": stat_module.S_IFBLK,
            "fifo": stat_module.S_IFIFO,
            "socket": stat_module.S_IFSOCK,
        }
        return stat_module.filemode(kinds.get(self.type, 0) | self.mode)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileInfo:
        """From one entry of the agent's ``stat`` or ``list`` answer."""
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            size=int(data["size"]),
            mode=int(data["mode"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            mtime=float(data["mtime"]),
            target=data.get("target"),
            path=data.get("path"),
        )


@dataclass(frozen=True)
class AgentInfo:
    """The agent at the other end, as its ``hello`` (or ``version``) answer says.

    Attributes:
        agent: its version (``"0.1.0"``).
        protocol: the protocol version it speaks.
        capabilities: the operations and features it has (``"exec"``, ``"pty"``...).
        max_frame: the largest frame payload it takes.
        pid1: it runs as the guest's init.
    """

    agent: str
    protocol: int
    capabilities: frozenset[str] = field(default_factory=frozenset)
    max_frame: int = 0
    pid1: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentInfo:
        """From the agent's ``hello`` or ``version`` answer."""
        return cls(
            agent=str(data.get("agent", "")),
            protocol=int(data.get("protocol", 0)),
            capabilities=frozenset(str(c) for c in data.get("capabilities", ())),
            max_frame=int(data.get("max_frame", 0)),
            pid1=bool(data.get("pid1", False)),
        )
