"""An image's defaults for running commands in it, as ``firec image build`` records them.

A container image says how its programs run: entrypoint, cmd, environment,
working directory and user (the ``config`` of its OCI image config, which
``docker save`` keeps too). ``firec image build`` writes them, with where the
guest agent is and how it starts, as one JSON document in two places:

* inside the image, at ``/.firec/image.json`` (:data:`IMAGE_JSON`), for the agent;
* beside the ext4 file on the host, as ``<image>.json`` (:func:`sidecar_path`),
  for ``firec run`` and ``exec`` to read without opening the image.

The document (schema version :data:`SCHEMA_VERSION`)::

    {
      "schema": 1,                         # this layout; readers refuse a newer one
      "entrypoint": ["/bin/sh", "-c"],     # or null: none
      "cmd": ["echo hi"],                  # or null: none
      "env": ["PATH=/usr/bin:/bin"],       # KEY=VALUE, in order
      "working_dir": "/",                  # or null: "/"
      "user": "1000:1000",                 # or null: root; as the image gives it
      "agent": "/.firec/firec-agent",      # or null: no agent in the image
      "agent_mode": "init",                # "init" (PID 1), "service" (a systemd unit), or null
      "init": "/.firec/firec-agent",       # what the kernel must run as PID 1 (init=...), or null
      "source": "busybox.tar"              # what the image was built from
    }

Example::

    >>> defaults = ImageDefaults(entrypoint=("/bin/sh", "-c"), cmd=("echo hi",))
    >>> defaults.argv()
    ['/bin/sh', '-c', 'echo hi']
    >>> defaults.argv(["date"])
    ['/bin/sh', '-c', 'date']
    >>> ImageDefaults.from_json(defaults.to_json()) == defaults
    True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from firec.errors import FirecError, ValidationError

__all__ = [
    "AGENT_PATH",
    "IMAGE_DIR",
    "IMAGE_JSON",
    "SCHEMA_VERSION",
    "ImageDefaults",
    "read_image_defaults",
    "sidecar_path",
]

#: The version of the document's layout this firec writes and reads.
SCHEMA_VERSION = 1
#: firec's directory inside an image.
IMAGE_DIR = "/.firec"
#: The document inside the image.
IMAGE_JSON = "/.firec/image.json"
#: Where the agent is installed inside the image.
AGENT_PATH = "/.firec/firec-agent"

_MODES = (None, "init", "service")


@dataclass(frozen=True)
class ImageDefaults:
    """How commands run in an image, and how its agent starts.

    Attributes:
        entrypoint: the command line every command is appended to, if any.
        cmd: the command run when none is given (or the entrypoint's default arguments).
        env: ``KEY=VALUE`` strings.
        working_dir: the directory commands start in (``None``: ``/``).
        user: the user (and group) they run as, as the image gives it (``None``: root).
        agent: the agent's path inside the image, or ``None`` when it has none.
        agent_mode: ``"init"`` (the agent is PID 1), ``"service"`` (started by
            the image's systemd), or ``None``.
        init: what the kernel must start as PID 1 (``init=`` on its command
            line), or ``None`` for the image's own.
        source: what the image was built from.
    """

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str | None = None
    user: str | None = None
    agent: str | None = None
    agent_mode: str | None = None
    init: str | None = None
    source: str | None = None

    def argv(self, command: Sequence[str] | None = None) -> list[str]:
        """The command line to run: the entrypoint, then ``command`` or else the image's cmd.

        As ``docker run IMAGE [COMMAND]``: a command replaces the cmd, not the entrypoint.
        """
        args = list(command) if command else list(self.cmd or ())
        return [*(self.entrypoint or ()), *args]

    def to_json(self) -> dict[str, Any]:
        """The document, as written to ``image.json``."""
        return {
            "schema": SCHEMA_VERSION,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "cmd": list(self.cmd) if self.cmd is not None else None,
            "env": list(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
            "agent": self.agent,
            "agent_mode": self.agent_mode,
            "init": self.init,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "image.json") -> ImageDefaults:
        """Read the document; a :class:`ValidationError` names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValidationError(where, "not a JSON object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise ValidationError(f"{where}: schema", f"expected a version number, got {schema!r}")
        if schema > SCHEMA_VERSION:
            raise ValidationError(
                f"{where}: schema",
                f"version {schema} is newer than this firec reads ({SCHEMA_VERSION}): "
                "upgrade firec",
            )
        mode = data.get("agent_mode")
        if mode not in _MODES:
            raise ValidationError(
                f"{where}: agent_mode", f"expected init, service or null, got {mode!r}"
            )
        return cls(
            entrypoint=_strings(data, "entrypoint", where),
            cmd=_strings(data, "cmd", where),
            env=_strings(data, "env", where) or (),
            working_dir=_string(data, "working_dir", where),
            user=_string(data, "user", where),
            agent=_string(data, "agent", where),
            agent_mode=mode,
            init=_string(data, "init", where),
            source=_string(data, "source", where),
        )

    @classmethod
    def from_image_config(cls, config: Any, source: str | None = None) -> ImageDefaults:
        """The defaults an OCI image config (or a ``docker save`` config) gives.

        Example::

            >>> ImageDefaults.from_image_config({"config": {"Cmd": ["sh"], "WorkingDir": "/w"}}).cmd
            ('sh',)
        """
        body = config.get("config") if isinstance(config, Mapping) else None
        if not isinstance(body, Mapping):
            return cls(source=source)
        where = "image config"
        return cls(
            entrypoint=_strings(body, "Entrypoint", where),
            cmd=_strings(body, "Cmd", where),
            env=_strings(body, "Env", where) or (),
            working_dir=_string(body, "WorkingDir", where) or None,
            user=_string(body, "User", where) or None,
            source=source,
        )

    def overridden(self, **changes: Any) -> ImageDefaults:
        """A copy with the fields given (not ``None``) replaced.

        Example::

            >>> ImageDefaults(cmd=("sh",)).overridden(cmd=["ls"], user=None).cmd
            ('ls',)
        """
        given: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in changes.items() if v is not None
        }
        return replace(self, **given)


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{where}: {key}", f"expected a list of strings, got {value!r}")
    return tuple(value)


def _string(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{where}: {key}", f"expected a string, got {value!r}")
    return value


def sidecar_path(image: str | os.PathLike[str]) -> Path:
    """Where the defaults of the image file ``image`` are on the host: ``<image>.json``.

    Example::

        >>> sidecar_path("/srv/rootfs.ext4")
        PosixPath('/srv/rootfs.ext4.json')
    """
    path = Path(image)
    return path.with_name(path.name + ".json")


def read_image_defaults(path: str | os.PathLike[str]) -> ImageDefaults:
    """The defaults of an image built by ``firec image build``.

    Args:
        path: the ext4 image (its ``<image>.json`` is read, or else the
            ``/.firec/image.json`` inside it), or such a JSON document itself.

    Raises:
        FirecError: no such file, or an image with no record (built without
            ``firec image build``, or by an older firec).
        ValidationError: a record that is not valid (the field is named).

    Example::

        >>> read_image_defaults("rootfs.ext4").argv()  # doctest: +SKIP
        ['/bin/sh']
    """
    src = Path(path)
    if not src.exists():
        raise FirecError(f"{src}: no such image")
    if src.suffix == ".json" and src.is_file():
        return _load(src.read_bytes(), str(src))
    beside = sidecar_path(src)
    if beside.is_file():
        return _load(beside.read_bytes(), str(beside))
    from firec.images import e2fs

    with tempfile.TemporaryDirectory(prefix="firec-image-") as work:
        copy = Path(work) / "image.json"
        try:
            e2fs.run_debugfs(
                src, [f"dump {e2fs.debugfs_quote(IMAGE_JSON)} {e2fs.debugfs_quote(str(copy))}"]
            )
        except FirecError as exc:
            raise FirecError(
                f"{src}: no {beside.name} beside it and no {IMAGE_JSON} inside it; was it built "
                f"with firec image build? ({exc})"
            ) from exc
        if not copy.exists():
            raise FirecError(f"{src}: no {beside.name} beside it and no {IMAGE_JSON} inside it")
        return _load(copy.read_bytes(), f"{src}:{IMAGE_JSON}")


def _load(data: bytes, where: str) -> ImageDefaults:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(where, f"not valid JSON: {exc}") from exc
    return ImageDefaults.from_json(document, where)
