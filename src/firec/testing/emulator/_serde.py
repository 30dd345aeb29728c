"""A JSON reader that refuses bodies exactly like Firecracker's serde_json + serde derive.

Firecracker deserializes each request body into a Rust struct; its error messages
("unknown field `x`, expected one of ...", "missing field `y`", "invalid type:
string \\"1\\", expected u8") and their "at line L column C" positions are part of
what clients see. The types below describe those structs; :func:`from_text`
parses a body against one and raises :class:`SerdeError` with the same message
and position real Firecracker reports.
"""

from __future__ import annotations

import contextlib
import json
import json.decoder
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class SerdeError(Exception):
    """A body refused by the deserializer; ``offset`` is None until a position is known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset

    def render(self, text: str) -> str:
        """The message as serde_json prints it (``"... at line 1 column 5"``)."""
        if self.offset is None:
            return self.message
        off = min(self.offset, len(text))
        line = text.count("\n", 0, off) + 1
        column = off - (text.rfind("\n", 0, off) + 1)
        return f"{self.message} at line {line} column {column}"


class Reader:
    """Cursor over the body; ``i`` is the number of characters consumed."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def ws(self) -> str | None:
        s, i, n = self.s, self.i, len(self.s)
        while i < n and s[i] in " \t\n\r":
            i += 1
        self.i = i
        return s[i] if i < n else None

    def error(self, message: str) -> SerdeError:
        return SerdeError(message, self.i)

    def peek_error(self, message: str) -> SerdeError:
        return SerdeError(message, min(len(self.s), self.i + 1))

    def fix(self, err: SerdeError) -> SerdeError:
        if err.offset is None:
            err.offset = self.i
        return err


# --- scalar parsing -------------------------------------------------------------------


def _parse_ident(r: Reader, word: str) -> None:
    for ch in word:
        c = r.peek()
        if c is None:
            raise r.peek_error("EOF while parsing a value")
        r.i += 1
        if c != ch:
            raise r.error("expected ident")


def _parse_string(r: Reader) -> str:
    """Parse a string whose opening quote is the next character."""
    start = r.i
    try:
        value, end = _scanstring(r.s, start + 1)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated"):
            r.i = len(r.s)
            raise r.peek_error("EOF while parsing a string") from None
        r.i = exc.pos + 1
        if "control character" in exc.msg:
            raise r.error(
                "control character (\\u0000-\\u001F) found while parsing a string"
            ) from None
        raise r.error("invalid escape") from None
    r.i = end
    return str(value)


def _parse_number(r: Reader) -> int | float:
    s, start = r.s, r.i
    i = start
    n = len(s)
    if i < n and s[i] == "-":
        i += 1
    if i >= n or not s[i].isdigit():
        r.i = i
        raise r.error("invalid number") if i < n else r.peek_error("EOF while parsing a value")
    if s[i] == "0" and i + 1 < n and s[i + 1].isdigit():
        r.i = i + 1
        raise r.peek_error("invalid number")
    while i < n and s[i].isdigit():
        i += 1
    is_float = False
    if i < n and s[i] == ".":
        is_float = True
        i += 1
        if i >= n or not s[i].isdigit():
            r.i = i
            raise r.peek_error("EOF while parsing a value" if i >= n else "invalid number")
        while i < n and s[i].isdigit():
            i += 1
    if i < n and s[i] in "eE":
        is_float = True
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        if i >= n or not s[i].isdigit():
            r.i = i
            raise r.peek_error("EOF while parsing a value" if i >= n else "invalid number")
        while i < n and s[i].isdigit():
            i += 1
    r.i = i
    text = s[start:i]
    if is_float:
        return float(text)
    value = int(text)
    if value > 2**64 - 1 or value < -(2**63):
        return float(value)
    return value


def parse_any(r: Reader) -> Any:
    """Parse any JSON value (serde_json::Value), with serde_json's error messages."""
    c = r.ws()
    if c is None:
        raise r.peek_error("EOF while parsing a value")
    if c == "{":
        r.i += 1
        obj: dict[str, Any] = {}
        first = True
        while True:
            key = _next_key(r, first)
            if key is None:
                break
            first = False
            _colon(r)
            obj[key] = parse_any(r)
        _end_map(r)
        return obj
    if c == "[":
        r.i += 1
        items: list[Any] = []
        first = True
        while _next_element(r, first):
            first = False
            items.append(parse_any(r))
        _end_seq(r)
        return items
    if c == '"':
        return _parse_string(r)
    if c == "t":
        _parse_ident(r, "true")
        return True
    if c == "f":
        _parse_ident(r, "false")
        return False
    if c == "n":
        _parse_ident(r, "null")
        return None
    if c == "-" or c.isdigit():
        return _parse_number(r)
    raise r.peek_error("expected value")


def _next_key(r: Reader, first: bool) -> str | None:
    c = r.ws()
    if c == "}":
        return None
    if c == "," and not first:
        r.i += 1
        c = r.ws()
    elif c is not None and not first:
        raise r.peek_error("expected `,` or `}`")
    if c is None:
        raise r.peek_error("EOF while parsing an object")
    if c == '"':
        return _parse_string(r)
    if c == "}":
        raise r.peek_error("trailing comma")
    raise r.peek_error("key must be a string")


def _colon(r: Reader) -> None:
    c = r.ws()
    if c == ":":
        r.i += 1
        return
    if c is None:
        raise r.peek_error("EOF while parsing an object")
    raise r.peek_error("expected `:`")


def _end_map(r: Reader) -> None:
    c = r.ws()
    if c == "}":
        r.i += 1
        return
    if c == ",":
        raise r.peek_error("trailing comma")
    if c is None:
        raise r.peek_error("EOF while parsing an object")
    raise r.peek_error("trailing characters")


def _next_element(r: Reader, first: bool) -> bool:
    c = r.ws()
    if c == "]":
        return False
    if c == "," and not first:
        r.i += 1
        c = r.ws()
        if c == "]":
            raise r.peek_error("trailing comma")
    elif c is not None and not first:
        raise r.peek_error("expected `,` or `]`")
    if c is None:
        raise r.peek_error("EOF while parsing a list")
    return True


def _end_seq(r: Reader) -> None:
    c = r.ws()
    if c == "]":
        r.i += 1
        return
    if c == ",":
        r.i += 1
        if r.ws() == "]":
            raise r.peek_error("trailing comma")
        raise r.peek_error("trailing characters")
    if c is None:
        raise r.peek_error("EOF while parsing a list")
    raise r.peek_error("trailing characters")


def _unexpected(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        text = repr(value)
        if "e" not in text and "." not in text:
            text += ".0"
        return f"floating point `{text}`"
    return "string " + json.dumps(value, ensure_ascii=False)


def _invalid_type(r: Reader, expected: str) -> SerdeError:
    """serde_json's peek_invalid_type: consume a scalar, name what was found."""
    c = r.ws()
    if c == "[":
        return r.error(f"invalid type: sequence, expected {expected}")
    if c == "{":
        return r.error(f"invalid type: map, expected {expected}")
    if c in ("n", "t", "f", '"', "-") or (c is not None and c.isdigit()):
        value = parse_any(r)
        return r.error(f"invalid type: {_unexpected(value)}, expected {expected}")
    if c is None:
        return r.peek_error("EOF while parsing a value")
    return r.peek_error("expected value")


# --- types ----------------------------------------------------------------------------


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
            value = _parse_number(r)
            if isinstance(value, float):
                raise r.error(f"invalid type: {_unexpected(value)}, expected {self.expecting}")
            if not self.lo <= value <= self.hi:
                raise r.error(f"invalid value: integer `{value}`, expected {self.expecting}")
            return value
        raise _invalid_type(r, self.expecting)


class Bool(Type):
    """A Rust bool."""

    expecting = "a boolean"

    def read(self, r: Reader) -> bool:
        c = r.ws()
        if c == "t":
            _parse_ident(r, "true")
            return True
        if c == "f":
            _parse_ident(r, "false")
            return False
        raise _invalid_type(r, self.expecting)


class Text(Type):
    """A Rust String (``expecting="a string"``) or PathBuf (``"path string"``)."""

    def __init__(self, expecting: str = "a string") -> None:
        self.expecting = expecting

    def read(self, r: Reader) -> str:
        if r.ws() == '"':
            return _parse_string(r)
        raise _invalid_type(r, self.expecting)


class Custom(Type):
    """A string checked by ``check``, which raises ``SerdeError`` (positioned or not)."""

    def __init__(self, check: Callable[[str], Any], expecting: str = "a string") -> None:
        self.check = check
        self.expecting = expecting

    def read(self, r: Reader) -> Any:
        if r.ws() != '"':
            raise _invalid_type(r, self.expecting)
        text = _parse_string(r)
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
        text = _parse_string(r)
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
                raise _invalid_type(r, "variant identifier")
            variant = self._variant(r)
            _colon(r)
            if r.ws() == "n":
                _parse_ident(r, "null")
            else:
                raise _invalid_type(r, "unit variant")
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
            _parse_ident(r, "null")
            return None
        return self.inner.read(r)


class Vec(Type):
    """Vec<T>."""

    expecting = "a sequence"

    def __init__(self, item: Type) -> None:
        self.item = item

    def read(self, r: Reader) -> list[Any]:
        if r.ws() != "[":
            raise _invalid_type(r, self.expecting)
        r.i += 1
        items: list[Any] = []
        first = True
        try:
            while _next_element(r, first):
                first = False
                items.append(self.item.read(r))
        except SerdeError as err:
            if err.offset is None:
                _try_end(r, _end_seq)
            raise r.fix(err) from None
        _end_seq(r)
        return items


_MISSING: Any = object()


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
            r.i += 1
            try:
                values = self._visit_map(r)
            except SerdeError as err:
                if err.offset is None:
                    _try_end(r, _end_map)
                raise r.fix(err) from None
            _end_map(r)
            return values
        if c == "[":
            r.i += 1
            try:
                values = self._visit_seq(r)
            except SerdeError as err:
                if err.offset is None:
                    _try_end(r, _end_seq)
                raise r.fix(err) from None
            _end_seq(r)
            return values
        raise _invalid_type(r, self.expecting)

    def _visit_map(self, r: Reader) -> dict[str, Any]:
        by_name = {f.name: f for f in self.fields}
        found: dict[str, Any] = {}
        first = True
        while True:
            key = _next_key(r, first)
            if key is None:
                break
            first = False
            spec = by_name.get(key)
            if spec is None:
                if self.deny_unknown:
                    raise r.error(f"unknown field `{key}`, {_expected_fields(self.field_names)}")
                _colon(r)
                parse_any(r)
                continue
            if key in found:
                raise SerdeError(f"duplicate field `{key}`")
            _colon(r)
            found[key] = spec.type.read(r)
        return self._complete(found)

    def _visit_seq(self, r: Reader) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for index, spec in enumerate(self.fields):
            if not _next_element(r, index == 0):
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


def _try_end(r: Reader, end: Callable[[Reader], None]) -> None:
    """serde_json runs end_map/end_seq even after a failure; only its consumption matters."""
    with contextlib.suppress(SerdeError):
        end(r)


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
