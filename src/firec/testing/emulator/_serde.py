"""Rust types as serde deserializes them: integers, strings, enums, options, vectors, structs.

Firecracker deserializes each request body into a Rust struct; its error messages
("unknown field `x`, expected one of ...", "missing field `y`", "invalid type:
string \\"1\\", expected u8") and their "at line L column C" positions are part of
what clients see. The types below describe those structs (read with serde_json's
reader, :mod:`._json_reader`); :func:`from_text` parses a body against one and
raises :class:`SerdeError` with the same message and position real Firecracker
reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._json_reader import (
    Reader,
    SerdeError,
    colon,
    elements,
    end_map,
    end_seq,
    invalid_type,
    keys,
    next_element,
    parse_any,
    parse_ident,
    parse_number,
    parse_string,
    unexpected,
)

__all__ = [
    "Any_",
    "Bool",
    "Custom",
    "Enum",
    "Field",
    "Int",
    "Opt",
    "SerdeError",
    "Struct",
    "Text",
    "Type",
    "Vec",
    "from_text",
    "parse_any",
]


class Type:
    """A Rust type as serde deserializes it from JSON."""

    expecting = "a value"

    def read(self, r: Reader) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Any_(Type):
    """serde_json::Value: any JSON."""

    def read(self, r: Reader) -> Any:
        return parse_any(r)


_INT_RANGES = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "usize": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}


class Int(Type):
    """An unsigned (or i64) Rust integer."""

    def __init__(self, rust: str) -> None:
        self.expecting = rust
        self.lo, self.hi = _INT_RANGES[rust]

    def read(self, r: Reader) -> int:
        c = r.ws()
        if c == "-" or (c is not None and c.isdigit()):
            value = parse_number(r)
            if isinstance(value, float):
                raise r.error(f"invalid type: {unexpected(value)}, expected {self.expecting}")
            if not self.lo <= value <= self.hi:
                raise r.error(f"invalid value: integer `{value}`, expected {self.expecting}")
            return value
        raise invalid_type(r, self.expecting)


class Bool(Type):
    """A Rust bool."""

    expecting = "a boolean"

    def read(self, r: Reader) -> bool:
        c = r.ws()
        if c == "t":
            parse_ident(r, "true")
            return True
        if c == "f":
            parse_ident(r, "false")
            return False
        raise invalid_type(r, self.expecting)


class Text(Type):
    """A Rust String (``expecting="a string"``) or PathBuf (``"path string"``)."""

    def __init__(self, expecting: str = "a string") -> None:
        self.expecting = expecting

    def read(self, r: Reader) -> str:
        if r.ws() == '"':
            return parse_string(r)
        raise invalid_type(r, self.expecting)


class Custom(Type):
    """A string checked by ``check``, which raises ``SerdeError`` (positioned or not)."""

    def __init__(self, check: Callable[[str], Any], expecting: str = "a string") -> None:
        self.check = check
        self.expecting = expecting

    def read(self, r: Reader) -> Any:
        if r.ws() != '"':
            raise invalid_type(r, self.expecting)
        text = parse_string(r)
        try:
            return self.check(text)
        except SerdeError as err:
            if err.offset == -1:  # error raised inside the string visitor: positioned here
                err.offset = r.i
            raise


class Enum(Type):
    """A Rust enum of unit variants (serialized as their names)."""

    def __init__(self, name: str, variants: Sequence[str], aliases: dict[str, str] | None = None):
        self.name = name
        self.variants = list(variants)
        self.aliases = aliases or {}
        self.expecting = f"enum {name}"

    def _variant(self, r: Reader) -> str:
        text = parse_string(r)
        if text in self.variants:
            return text
        if text in self.aliases:
            return self.aliases[text]
        raise r.error(f"unknown variant `{text}`, expected {_one_of(self.variants)}")

    def read(self, r: Reader) -> str:
        c = r.ws()
        if c == '"':
            return self._variant(r)
        if c == "{":
            r.i += 1
            c = r.ws()
            if c != '"':
                raise invalid_type(r, "variant identifier")
            variant = self._variant(r)
            colon(r)
            if r.ws() == "n":
                parse_ident(r, "null")
            else:
                raise invalid_type(r, "unit variant")
            c = r.ws()
            if c == "}":
                r.i += 1
                return variant
            if c is None:
                raise r.peek_error("EOF while parsing an object")
            raise r.peek_error("expected `}`")
        if c is None:
            raise r.peek_error("EOF while parsing a value")
        raise r.peek_error("expected value")


class Opt(Type):
    """Option<T>: ``null`` is None."""

    def __init__(self, inner: Type) -> None:
        self.inner = inner
        self.expecting = inner.expecting

    def read(self, r: Reader) -> Any:
        if r.ws() == "n":
            parse_ident(r, "null")
            return None
        return self.inner.read(r)


class Vec(Type):
    """Vec<T>."""

    expecting = "a sequence"

    def __init__(self, item: Type) -> None:
        self.item = item

    def read(self, r: Reader) -> list[Any]:
        if r.ws() != "[":
            raise invalid_type(r, self.expecting)
        return _visit(r, self._visit_seq, end_seq)

    def _visit_seq(self, r: Reader) -> list[Any]:
        return [self.item.read(r) for _ in elements(r)]


_MISSING: Any = object()
_T = TypeVar("_T")


@dataclass
class Field:
    """One struct field: ``default`` is used when the key is absent (``_MISSING``: required)."""

    name: str
    type: Type
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING and not isinstance(self.type, Opt)


def opt(name: str, t: Type) -> Field:
    """An ``Option<T>`` field (absent or null: None)."""
    return Field(name, Opt(t), None)


@dataclass
class Struct(Type):
    """A Rust struct deserialized from a JSON object (or array)."""

    name: str
    fields: list[Field]
    deny_unknown: bool = True
    expecting: str = field(init=False)

    def __post_init__(self) -> None:
        self.expecting = f"struct {self.name}"

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def read(self, r: Reader) -> dict[str, Any]:
        c = r.ws()
        if c == "{":
            return _visit(r, self._visit_map, end_map)
        if c == "[":
            return _visit(r, self._visit_seq, end_seq)
        raise invalid_type(r, self.expecting)

    def _visit_map(self, r: Reader) -> dict[str, Any]:
        by_name = {f.name: f for f in self.fields}
        found: dict[str, Any] = {}
        for key in keys(r):
            spec = by_name.get(key)
            if spec is None:
                if self.deny_unknown:
                    raise r.error(f"unknown field `{key}`, {_expected_fields(self.field_names)}")
                colon(r)
                parse_any(r)
                continue
            if key in found:
                raise SerdeError(f"duplicate field `{key}`")
            colon(r)
            found[key] = spec.type.read(r)
        return self._complete(found)

    def _visit_seq(self, r: Reader) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for index, spec in enumerate(self.fields):
            if not next_element(r, index == 0):
                raise SerdeError(
                    f"invalid length {index}, expected struct {self.name} "
                    f"with {len(self.fields)} elements"
                )
            found[spec.name] = spec.type.read(r)
        return found

    def _complete(self, found: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name in found:
                out[spec.name] = found[spec.name]
            elif spec.required:
                raise SerdeError(f"missing field `{spec.name}`")
            else:
                out[spec.name] = None if spec.default is _MISSING else _copy(spec.default)
        out["__present__"] = set(found)
        return out


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _visit(r: Reader, visit: Callable[[Reader], _T], end: Callable[[Reader], None]) -> _T:
    """Read a map or a sequence whose bracket is next: its contents, then its end.

    After a failure that has no position yet, serde_json still runs end_map or
    end_seq: only what that consumes matters (the error's position).
    """
    r.i += 1
    try:
        value = visit(r)
    except SerdeError as err:
        if err.offset is None:
            with contextlib.suppress(SerdeError):
                end(r)
        raise r.fix(err) from None
    end(r)
    return value


def _one_of(names: Sequence[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if not quoted:
        return "there are no variants"
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def _expected_fields(names: Sequence[str]) -> str:
    if not names:
        return "there are no fields"
    return "expected " + _one_of(names)


def from_text(text: str, t: Type) -> Any:
    """Deserialize a whole body as serde_json::from_slice does (trailing data refused)."""
    r = Reader(text)
    value = t.read(r)
    if r.ws() is not None:
        raise r.peek_error("trailing characters")
    return value
