"""serde_json's reader: JSON text, read with serde_json's error messages and positions.

Firecracker deserializes each request body with serde_json; its syntax errors
("EOF while parsing a value", "trailing comma", "expected `,` or `}`") and their
"at line L column C" positions are part of what clients see. :class:`Reader` is
the cursor over a body, :func:`parse_any` reads any JSON value (serde_json::Value),
and the smaller readers here (strings, numbers, the punctuation of maps and
sequences) are those the typed readers of :mod:`._serde` are built from.
"""

from __future__ import annotations

import json
import json.decoder
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "Reader",
    "SerdeError",
    "colon",
    "elements",
    "end_map",
    "end_seq",
    "invalid_type",
    "keys",
    "next_element",
    "next_key",
    "parse_any",
    "parse_ident",
    "parse_number",
    "parse_string",
    "unexpected",
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


def parse_ident(r: Reader, word: str) -> None:
    for ch in word:
        c = r.peek()
        if c is None:
            raise r.peek_error("EOF while parsing a value")
        r.i += 1
        if c != ch:
            raise r.error("expected ident")


def parse_string(r: Reader) -> str:
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


def parse_number(r: Reader) -> int | float:
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
        i = _more_digits(r, i + 1)
    if i < n and s[i] in "eE":
        is_float = True
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        i = _more_digits(r, i)
    r.i = i
    text = s[start:i]
    if is_float:
        return float(text)
    value = int(text)
    if value > 2**64 - 1 or value < -(2**63):
        return float(value)
    return value


def _more_digits(r: Reader, i: int) -> int:
    """Past the digits from ``i`` on: a fraction or an exponent needs one at least."""
    s, n = r.s, len(r.s)
    if i >= n or not s[i].isdigit():
        r.i = i
        raise r.peek_error("EOF while parsing a value" if i >= n else "invalid number")
    while i < n and s[i].isdigit():
        i += 1
    return i


def parse_any(r: Reader) -> Any:
    """Parse any JSON value (serde_json::Value), with serde_json's error messages."""
    c = r.ws()
    if c is None:
        raise r.peek_error("EOF while parsing a value")
    if c == "{":
        r.i += 1
        obj: dict[str, Any] = {}
        for key in keys(r):
            colon(r)
            obj[key] = parse_any(r)
        end_map(r)
        return obj
    if c == "[":
        r.i += 1
        items = [parse_any(r) for _ in elements(r)]
        end_seq(r)
        return items
    if c == '"':
        return parse_string(r)
    if c == "t":
        parse_ident(r, "true")
        return True
    if c == "f":
        parse_ident(r, "false")
        return False
    if c == "n":
        parse_ident(r, "null")
        return None
    if c == "-" or c.isdigit():
        return parse_number(r)
    raise r.peek_error("expected value")


def next_key(r: Reader, first: bool) -> str | None:
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
        return parse_string(r)
    if c == "}":
        raise r.peek_error("trailing comma")
    raise r.peek_error("key must be a string")


def keys(r: Reader) -> Iterator[str]:
    """The keys of a map whose ``{`` is read; the caller reads each one's ``:`` and value."""
    first = True
    while (key := next_key(r, first)) is not None:
        first = False
        yield key


def colon(r: Reader) -> None:
    c = r.ws()
    if c == ":":
        r.i += 1
        return
    if c is None:
        raise r.peek_error("EOF while parsing an object")
    raise r.peek_error("expected `:`")


def end_map(r: Reader) -> None:
    c = r.ws()
    if c == "}":
        r.i += 1
        return
    if c == ",":
        raise r.peek_error("trailing comma")
    if c is None:
        raise r.peek_error("EOF while parsing an object")
    raise r.peek_error("trailing characters")


def next_element(r: Reader, first: bool) -> bool:
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


def elements(r: Reader) -> Iterator[None]:
    """Once per element of a sequence whose ``[`` is read; the caller reads the element."""
    first = True
    while next_element(r, first):
        first = False
        yield


def end_seq(r: Reader) -> None:
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


def unexpected(value: Any) -> str:
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


def invalid_type(r: Reader, expected: str) -> SerdeError:
    """serde_json's peek_invalid_type: consume a scalar, name what was found."""
    c = r.ws()
    if c == "[":
        return r.error(f"invalid type: sequence, expected {expected}")
    if c == "{":
        return r.error(f"invalid type: map, expected {expected}")
    if c in ("n", "t", "f", '"', "-") or (c is not None and c.isdigit()):
        value = parse_any(r)
        return r.error(f"invalid type: {unexpected(value)}, expected {expected}")
    if c is None:
        return r.peek_error("EOF while parsing a value")
    return r.peek_error("expected value")
