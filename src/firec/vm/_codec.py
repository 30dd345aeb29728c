"""Frozen dataclasses to JSON-ready data and back, guided by their type hints.

The machinery behind :meth:`firec.Config.to_dict` / :meth:`~firec.Config.from_dict`
and the host registry's VM records. It works on any dataclass whose fields
hold these values:

* ``None``, ``bool``, ``int``, ``float``, ``str``, ``Literal`` values;
* enums (as their value), paths and :mod:`ipaddress` values (as strings);
* API models (:class:`~firec.api.models.APIModel`, as their API body);
* a :class:`~firec.vm.console.Console` (``{"kind", "path"}``: a callback
  does not outlive its process, and comes back as ``Console.discard()``);
* dataclasses of these (nested), mappings, tuples, unions, optionals.

Reading is checked against the type hints: a value of the wrong type, a
field the class lacks or a required field left out is refused with
:class:`DecodeError`, naming the field (``machine.vcpu_count``,
``drives[0]``). Type hints and defaults are worked out once per class.

Example::

    >>> from dataclasses import dataclass
    >>> from pathlib import Path
    >>> @dataclass(frozen=True)
    ... class Disk:
    ...     path: Path
    ...     size: int = 0
    >>> encode_fields(Disk(Path("/d")), omit_defaults=True)
    {'path': '/d'}
    >>> decode(Disk, {"path": "/d", "size": 3})
    Disk(path=PosixPath('/d'), size=3)
    >>> decode(Disk, {"path": "/d", "size": "big"})
    Traceback (most recent call last):
    ...
    firec.vm._codec.DecodeError: size: 'big' is not a int
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import ipaddress
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from firec.api import models
from firec.api.models.base import APIModel
from firec.errors import FirecError, ValidationError
from firec.vm.console import Console, ConsoleKind

__all__ = ["DecodeError", "decode", "encode", "encode_fields"]

T = TypeVar("T")

_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


class DecodeError(ValueError):
    """Data that is not what :func:`encode` makes of the class asked for.

    Attributes:
        where: the dotted path of the field at fault (``""``: the whole value).
        reason: what is wrong with it.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _refused(where: str, exc: Exception) -> DecodeError:
    """``exc`` (raised making the value at ``where``) as a :class:`DecodeError`."""
    if isinstance(exc, ValidationError) and exc.field and len(exc.errors) == 1:
        return DecodeError(_at(where, exc.field), exc.reason)
    return DecodeError(where, str(exc))


# -- per class, once --------------------------------------------------------------------------


@functools.cache
def _type_only_names() -> dict[str, Any]:
    """Names that firec's modules import for type checking only (API models, Console)."""
    names = {name: obj for name, obj in vars(models).items() if isinstance(obj, type)}
    names["Console"] = Console
    return names


#: The types :func:`encode` returns as they are (not their subclasses: enums, bools).
_PLAIN = frozenset({str, int, float, bool, type(None)})
#: What :func:`encode` writes as its ``str()``.
_AS_STRINGS = (Path, *_IP_TYPES)

_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, dict[str, dataclasses.Field[Any]]] = {}
_DEFAULTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, localns=_type_only_names())
    return hints


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = {f.name: f for f in dataclasses.fields(cls)}
    return fields


def _defaults(cls: type) -> dict[str, Any]:
    """Each field's default value (fields without one are left out)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        _DEFAULTS[cls] = defaults
    return defaults


# -- encoding ---------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data (see the module documentation for what it takes).

    Raises:
        TypeError: a value of a type it cannot write.
    """
    kind = type(value)
    if kind in _PLAIN:  # most values: at once (a VM record is made on the boot path)
        return value
    if kind is dict:  # (a record's config: JSON already, but for a stray path)
        return {k if type(k) is str else str(k): encode(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [encode(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, _AS_STRINGS):
        return str(value)
    if isinstance(value, APIModel):
        return value.to_api()
    if isinstance(value, Console):
        encoded = {
            "kind": value.kind.value,
            "path": None if value.path is None else str(value.path),
        }
        if value.input is not None:
            encoded["input"] = str(value.input)
        return encoded
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: encode(getattr(value, name)) for name in _fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def encode_fields(obj: Any, *, omit_defaults: bool = False) -> dict[str, Any]:
    """The fields of the dataclass ``obj`` as JSON-ready data.

    ``omit_defaults`` leaves out the fields that hold their default value
    (:func:`decode` puts the defaults back).
    """
    cls = type(obj)
    defaults = _defaults(cls) if omit_defaults else {}
    out: dict[str, Any] = {}
    for name in _fields(cls):
        value = getattr(obj, name)
        if name not in defaults:
            out[name] = encode(value)
        elif value is not (default := defaults[name]) and value != default:
            out[name] = encode(value)  # (most fields hold their very default object)
    return out


# -- decoding ---------------------------------------------------------------------------------


def decode(cls: type[T], data: Any, where: str = "") -> T:
    """The ``cls`` (a dataclass) that :func:`encode` wrote as ``data``.

    ``where`` names ``data`` in errors (the fields inside are named after it).

    Raises:
        DecodeError: ``data`` is not such a value; it names the field at fault.
    """
    if not isinstance(data, Mapping):
        raise DecodeError(where, f"{data!r} is not an object")
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        others = f" (nor {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise DecodeError(_at(where, unknown[0]), f"{cls.__name__} has no such field{others}")
    defaults = _defaults(cls)
    for name, f in fields.items():
        if f.init and name not in data and name not in defaults:
            raise DecodeError(_at(where, name), "is missing")
    hints = _hints(cls)
    init = {
        name: _decode(hints[name], value, _at(where, name))
        for name, value in data.items()
        if fields[name].init
    }
    try:
        return cls(**init)
    except (TypeError, ValueError, FirecError) as exc:
        raise _refused(where, exc) from exc


def _decode_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    options = [a for a in args if a is not type(None)]
    if value is None:
        return None
    if str in options and isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        # several dataclasses: the one whose fields are the keys
        for option in options:
            if (
                dataclasses.is_dataclass(option)
                and isinstance(option, type)
                and set(value) == set(_fields(option))
            ):
                return decode(option, value, where)
    errors = []
    for option in options:
        try:
            return _decode(option, value, where)
        except DecodeError as exc:
            errors.append(exc.reason)
    raise DecodeError(where, f"{value!r} is none of {options}: {'; '.join(errors)}")


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _decode_union(args, value, where)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise DecodeError(where, f"{value!r} is not one of {args}")
        return value
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            raise DecodeError(where, f"{value!r} is not a list")
        return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise DecodeError(where, f"{value!r} is not an object")
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint is not Console:
        return decode(hint, value, where)
    try:
        return _decode_value(hint, value, where)
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, FirecError) as exc:
        raise _refused(where, exc) from exc


def _decode_value(hint: Any, value: Any, where: str) -> Any:
    """A value that is no container: a path, an enum, an API model, a console, a scalar."""
    if hint is Path:
        if not isinstance(value, str):
            raise DecodeError(where, f"{value!r} is not a path")
        return Path(value)
    if hint is Console:
        kind = ConsoleKind(value["kind"])
        if kind is ConsoleKind.FILE:
            return Console.file(value["path"], input=value.get("input"))
        if kind is ConsoleKind.TERMINAL:
            return Console.terminal()
        return Console.discard()  # a callback does not survive its process
    if isinstance(hint, type) and issubclass(hint, APIModel):
        return hint.from_api(value)
    if isinstance(hint, type) and issubclass(hint, (enum.Enum, *_IP_TYPES)):
        return hint(value)
    if hint in (str, int, bool, float):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise DecodeError(where, f"{value!r} is not a {hint.__name__}")
        return value
    raise DecodeError(where, f"cannot read a {hint}")
