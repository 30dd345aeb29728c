"""Checks of single values given to the config builders, each refusing with a :class:`ConfigError`.

Every check names the field and says what it accepts, so that a bad value is
refused where it is given (a setter, or :meth:`firec.Config.validate`), before
anything is made or spawned, and never as a builtin ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path
from typing import TypeVar

from firec.errors import ConfigError

__all__ = [
    "absolute_path",
    "bool_value",
    "control_char",
    "enum_value",
    "int_value",
    "optional_path",
    "path_value",
    "str_value",
]

E = TypeVar("E", bound=enum.Enum)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMES = {"\x00": "a NUL byte", "\n": "a newline", "\r": "a carriage return", "\t": "a tab"}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: object) -> str:
    return type(value).__name__


def control_char(text: str) -> str | None:
    """The first control character of ``text``, in words (``"a newline at 7"``), or ``None``."""
    match = _CONTROL.search(text)
    if match is None:
        return None
    char = match.group()
    return f"{_NAMES.get(char, f'the control character {char!r}')} at {match.start()}"


def path_value(field: str, value: object) -> Path:
    """``value`` as a :class:`Path`: a non-empty ``str`` or ``os.PathLike`` without NUL bytes."""
    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str) or (
        isinstance(value, os.PathLike) and isinstance(os.fspath(value), str)
    ):
        text = os.fspath(value)
    else:
        raise ConfigError(field, f"must be a path (a str or os.PathLike), not {_type_name(value)}")
    if not text:
        raise ConfigError(field, "must be a path, not an empty string")
    if "\x00" in text:
        raise ConfigError(field, f"{_shown(text)} contains a NUL byte: not a path")
    return Path(text)


def optional_path(field: str, value: object) -> Path | None:
    """:func:`path_value`, or ``None`` for ``None``."""
    return None if value is None else path_value(field, value)


def absolute_path(field: str, value: object, what: str = "path") -> Path:
    """:func:`path_value`, refused unless absolute (firec and Firecracker run in other dirs)."""
    path = path_value(field, value)
    if not path.is_absolute():
        raise ConfigError(
            field,
            f"{str(path)!r} is a relative path: give an absolute {what} "
            f"(Path({str(path)!r}).resolve() is one)",
        )
    return path


def enum_value(field: str, cls: type[E], value: object) -> E:
    """``value`` as a member of ``cls``, refused with every valid value named."""
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except (ValueError, TypeError):
        pass
    names = [repr(m.value) for m in cls]
    valid = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    raise ConfigError(field, f"must be {valid}, not {_shown(value)}") from None


def int_value(
    field: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) within ``minimum``..``maximum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(field, f"must be an integer, not {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(field, f"must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(field, f"must be at most {maximum}, not {value}")
    return value


def bool_value(field: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, not {_shown(value)}")
    return value


def str_value(field: str, value: object, *, what: str = "a string", empty: bool = False) -> str:
    """``value`` if it is a ``str`` (non-empty unless ``empty``) without control characters."""
    if not isinstance(value, str):
        raise ConfigError(field, f"must be {what}, not {_type_name(value)}")
    if not value and not empty:
        raise ConfigError(field, f"must be {what}, not an empty string")
    problem = control_char(value)
    if problem is not None:
        raise ConfigError(
            field, f"{_shown(value)} contains {problem}: must be {what} without control characters"
        )
    return value
