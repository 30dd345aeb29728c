"""Per-namespace sysctls under ``/proc/sys/net`` (read in the calling thread's namespace)."""

from __future__ import annotations

from pathlib import Path

from firec.errors import NetworkError

__all__ = ["read_sysctl", "write_sysctl"]

_ROOT = Path("/proc/sys")


def _path(key: str) -> Path:
    if not key.startswith("net/") or ".." in key.split("/"):
        raise ValueError(f"not a network sysctl: {key!r}")
    return _ROOT / key


def read_sysctl(key: str) -> str:
    """The value of sysctl ``key`` (slash-separated: ``net/ipv4/conf/eth0/forwarding``)."""
    try:
        return _path(key).read_text().strip()
    except OSError as exc:
        raise NetworkError(f"could not read sysctl {key}: {exc.strerror or exc}") from exc


def write_sysctl(key: str, value: str) -> None:
    """Set sysctl ``key`` (slash-separated) to ``value``."""
    try:
        _path(key).write_text(value)
    except OSError as exc:
        raise NetworkError(f"could not set sysctl {key}={value}: {exc.strerror or exc}") from exc
