"""Checks of a whole :class:`~firec.vm.config.Config`, on the plain values it holds.

:meth:`Config.validate <firec.vm.config.Config.validate>` calls these with its
fields (never the config itself, so that this module does not depend on it);
each refuses with a :class:`~firec.errors.ConfigError` naming the field and
saying what to do. The builders' own helpers (:func:`model`,
:func:`instance`) are here too.

Example::

    >>> check_unique("drives", ["root", "data"], "drive_id")
    >>> check_unique("drives", ["root", "root"], "drive_id")
    Traceback (most recent call last):
    ...
    firec.errors.ConfigError: drives[1].drive_id: duplicate drive_id 'root'
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from firec.api import models
from firec.api.operations import MAX_PAYLOAD_FLAG, payload_limit_in_args
from firec.errors import ConfigError, ValidationError

__all__ = [
    "MAX_SOCKET_PATH",
    "check_mmds_data",
    "check_mmds_interfaces",
    "check_payload_limit",
    "check_roots",
    "check_shared_files",
    "check_socket_length",
    "check_unique",
    "host_paths",
    "instance",
    "model",
]

M = TypeVar("M", bound=models.APIModel)
T = TypeVar("T")

#: The longest Unix socket path Linux accepts (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


def check_mmds_data(data: object) -> Mapping[str, Any]:
    """Return ``data`` if it is a JSON object (what the MMDS holds), else :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError("mmds_data", f"must be a JSON object (a dict), not {type(data).__name__}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(
            "mmds_data",
            f"must be JSON (str keys; str, number, bool, None, list and dict values): {exc}",
        ) from None
    return data


def model(prefix: str, cls: type[M], **fields: Any) -> M:
    """``cls(**fields)``, its :class:`ValidationError` named as a field of ``prefix``."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        errors = [(f"{prefix}.{f}" if f else prefix, r) for f, r in exc.errors]
        raise ConfigError(errors[0][0], errors[0][1], errors=errors) from None


def instance(field_name: str, value: object, cls: type[T], what: str) -> T:
    """``value`` if it is a ``cls``, else :class:`ConfigError` saying it must be ``what``."""
    if not isinstance(value, cls):
        raise ConfigError(field_name, f"must be {what}, not {type(value).__name__}")
    return value


def check_unique(field_name: str, values: Sequence[str], key: str) -> None:
    """Refuse a value of ``key`` given twice in the list ``field_name``."""
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{field_name}[{i}].{key}", f"duplicate {key} {value!r}")
        seen.add(value)


def check_roots(drives: Sequence[models.Drive], pmem: Sequence[models.Pmem]) -> None:
    """Refuse more than one root device among the drives and pmem devices."""
    roots = [d.drive_id for d in drives if d.is_root_device]
    roots += [p.id for p in pmem if getattr(p, "root_device", False)]
    if len(roots) > 1:
        raise ConfigError("drives", f"more than one root device: {', '.join(roots)}")


def check_mmds_interfaces(mmds_config: models.MmdsConfig, interface_ids: Sequence[str]) -> None:
    """Refuse an MMDS reached through an interface the VM does not have."""
    for i, name in enumerate(mmds_config.network_interfaces):
        if name not in interface_ids:
            raise ConfigError(
                f"mmds_config.network_interfaces[{i}]",
                f"no network interface {name!r}: the MMDS is reached through one of "
                f"the VM's interfaces ({', '.join(map(repr, interface_ids)) or 'it has none'})",
            )


def check_socket_length(host_socket_path: Path) -> None:
    """Refuse an API socket path longer than a Unix socket takes."""
    socket_bytes = len(os.fsencode(host_socket_path))
    if socket_bytes > MAX_SOCKET_PATH:
        raise ConfigError(
            "socket_path",
            f"{host_socket_path} is {socket_bytes} bytes; a Unix socket path takes at "
            f"most {MAX_SOCKET_PATH}: use a shorter vm_id, workdir or chroot_base_dir",
        )


def host_paths(
    kernel_image: Path,
    initrd: Path | None,
    firecracker_binary: Path | None,
    drives: Sequence[models.Drive],
    pmem: Sequence[models.Pmem],
) -> list[tuple[str, object]]:
    """The host paths a config names, with their fields (each must be absolute)."""
    paths: list[tuple[str, object]] = [("kernel_image", kernel_image)]
    if initrd is not None:
        paths.append(("initrd", initrd))
    if firecracker_binary is not None:
        paths.append(("firecracker_binary", firecracker_binary))
    for i, drive in enumerate(drives):
        if drive.path_on_host is not None:
            paths.append((f"drives[{i}].path_on_host", drive.path_on_host))
    for i, device in enumerate(pmem):
        paths.append((f"pmem[{i}].path_on_host", device.path_on_host))
    return paths


def check_shared_files(
    drives: Sequence[models.Drive], pmem: Sequence[models.Pmem], *, look: bool
) -> None:
    """Refuse one file behind two drives (or pmem devices) when any of them may write it.

    Files are the same when their paths are, or (``look``) their inodes.
    """
    backing: list[tuple[str, Path, bool]] = []
    for i, drive in enumerate(drives):
        if drive.path_on_host is not None:
            name = f"drives[{i}].path_on_host ({drive.drive_id})"
            backing.append((name, Path(drive.path_on_host), not drive.is_read_only))
    for i, device in enumerate(pmem):
        name = f"pmem[{i}].path_on_host ({device.id})"
        backing.append((name, Path(device.path_on_host), not device.read_only))
    seen: dict[object, tuple[str, bool]] = {}
    for name, path, writable in backing:
        key: object = os.path.normpath(path)
        if look:
            with contextlib.suppress(OSError):
                st = path.stat()
                key = (st.st_dev, st.st_ino)
        if key in seen:
            other, other_writable = seen[key]
            if writable or other_writable:
                raise ConfigError(
                    name,
                    f"{path} is also {other}, and {'this' if writable else 'that'} one is "
                    "writable: two devices on one file corrupt it; attach every one of "
                    "them read-only (is_read_only(True)), or give each its own copy",
                )
        seen.setdefault(key, (name, writable))


def check_payload_limit(limit: object, extra_args: Sequence[str]) -> None:
    """Refuse a bad ``http_api_max_payload_size``, or one given twice (also in ``extra_args``)."""
    in_args = MAX_PAYLOAD_FLAG in extra_args
    if limit is None:
        if in_args and payload_limit_in_args(extra_args) is None:
            raise ConfigError("extra_args", f"{MAX_PAYLOAD_FLAG} needs a number of bytes after it")
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            "http_api_max_payload_size", f"must be a number of bytes >= 1, not {limit!r}"
        )
    if in_args:
        raise ConfigError(
            "http_api_max_payload_size",
            f"{MAX_PAYLOAD_FLAG} is also in extra_args: give it once",
        )
