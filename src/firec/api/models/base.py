"""The base classes every firec model derives from, and the shared field types.

* :class:`APIModel`: a request (or request-and-response) body. Unknown keys are
  refused, like Firecracker itself refuses them.
* :class:`ResponseModel`: a body only Firecracker sends. Unknown keys (from a
  newer Firecracker) are ignored.

Both raise :class:`firec.errors.ValidationError`, never pydantic's own error,
naming the dotted path of the offending field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar, Self

import pydantic
import pydantic_core
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from firec.errors import ValidationError

__all__ = [
    "U64_MAX",
    "APIModel",
    "DeviceId",
    "EnumText",
    "HostPath",
    "NonNegativeInt32",
    "NonNegativeInt64",
    "ResponseModel",
    "StrictBool",
    "StrictInt",
    "StrictStr",
    "UInt",
    "explained_pattern",
]

_FROM_API = "firec_from_api"


def _fspath(value: object) -> object:
    """Accept :class:`os.PathLike` objects for host paths."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


StrictInt = Annotated[int, Strict()]
"""An integer; strings, floats and booleans are refused rather than converted."""

StrictBool = Annotated[bool, Strict()]
"""``True`` or ``False``; ``1`` or ``"yes"`` are refused."""

StrictStr = Annotated[str, Strict()]
"""A string; nothing is converted to one."""

#: The largest integer Firecracker reads (its unsigned fields are at most 64 bits).
U64_MAX = 2**64 - 1

UInt = Annotated[int, Strict(), Field(ge=0, le=U64_MAX)]
"""A non-negative integer of at most 64 bits (Firecracker reads it into an unsigned type)."""

NonNegativeInt64 = Annotated[int, Strict(), Field(ge=0, le=2**63 - 1)]
"""A non-negative integer the specification declares ``format: int64``."""

NonNegativeInt32 = Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)]
"""A non-negative integer the specification declares ``format: int32``."""

HostPath = Annotated[str, BeforeValidator(_fspath), Strict()]
"""A path on the host: a string or an :class:`os.PathLike`."""


def _text_only(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


EnumText = BeforeValidator(_text_only)
"""For ``Annotated[SomeEnum, EnumText]``: an enumeration field takes its members or
their values as strings (``"Paused"``), not bytes (pydantic would decode them)."""

_PATTERN_REASONS: dict[str, str] = {}


def explained_pattern(pattern: str, reason: str) -> str:
    """Register the reason given when a value does not match ``pattern``; return ``pattern``."""
    _PATTERN_REASONS[pattern] = reason
    return pattern


DeviceId = Annotated[
    str,
    Strict(),
    Field(
        pattern=explained_pattern(
            r"^[A-Za-z0-9_]+$", "may only contain ASCII letters, digits and _ (and not be empty)"
        ),
        examples=["rootfs", "eth0"],
    ),
]
"""A device id that also appears in a URL (``/drives/{drive_id}``): letters,
digits and ``_`` only, as Firecracker requires."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _join(path: str, field: str) -> str:
    if not path or not field:
        return path or field
    return path + field if field.startswith("[") else f"{path}.{field}"


def _reason(error: pydantic_core.ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    simple = {
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be an object (a mapping)",
        "model_type": "must be an object (a mapping)",
        "model_attributes_type": "must be an object (a mapping)",
    }
    if kind in simple:
        return simple[kind]
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "enum":
        return f"must be {ctx['expected']}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must have at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must have at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx["pattern"])
        return _PATTERN_REASONS.get(pattern, f"must match the pattern {pattern}")
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:]


def _convert(exc: pydantic.ValidationError) -> ValidationError:
    """Turn pydantic's error into firec's, naming every offending field."""
    pairs: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        path = _field_path(tuple(error["loc"]))
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ValidationError):
            # Raised by a model's own check, naming the field(s) concerned.
            for field, reason in cause.errors:
                pairs.append((_join(path, field), reason))
            continue
        pairs.append((path, _reason(error)))
    if not pairs:  # pragma: no cover - pydantic always reports at least one error
        pairs.append(("", str(exc)))
    return ValidationError(pairs[0][0], pairs[0][1], errors=pairs)


@contextmanager
def _firec_errors() -> Iterator[None]:
    try:
        yield
    except pydantic.ValidationError as exc:
        raise _convert(exc) from None


class APIModel(BaseModel):
    """Base class of every Firecracker API body.

    Construct with keyword arguments (Python attribute names, which are also
    the API's names except for the hyphenated keys of
    :class:`~firec.api.models.FullVmConfiguration`). Invalid values raise
    :class:`firec.errors.ValidationError` naming the field.

    Attributes:
        api_name: the name of the definition in Firecracker's API
            specification (``"MachineConfiguration"``).
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_enum_values=False,
        validate_assignment=True,
    )

    api_name: ClassVar[str] = "APIModel"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "api_name" not in cls.__dict__:
            cls.api_name = cls.__name__

    def __init__(self, /, **data: Any) -> None:
        with _firec_errors():
            super().__init__(**data)

    # Tell pydantic this __init__ only wraps its own: nested models are then
    # validated directly (keeping the validation context) instead of through it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        with _firec_errors():
            super().__setattr__(name, value)

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """Validate ``obj`` (as pydantic does) but raise :class:`firec.errors.ValidationError`."""
        with _firec_errors():
            return super().model_validate(obj, **options)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """Validate JSON text but raise :class:`firec.errors.ValidationError`."""
        with _firec_errors():
            return super().model_validate_json(json_data, **options)

    def to_api(self) -> dict[str, Any]:
        """Return the JSON-ready body Firecracker expects.

        Keys are the API's names; fields left unset (``None``) are omitted,
        because older Firecrackers refuse ``null`` for optional fields.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_api(cls, data: Any, *, strict: bool = False) -> Self:
        """Build a model from a body Firecracker sent (a decoded JSON object).

        By default keys this version of firec does not know (added by a newer
        Firecracker) are ignored, at any depth. With ``strict=True`` they are
        refused, as Firecracker refuses them in requests.

        Raises:
            firec.errors.ValidationError: the body does not match the model.
        """
        if not isinstance(data, Mapping):
            raise ValidationError("", f"a {cls.api_name} must be a JSON object, not {data!r}")
        return cls.model_validate(data, context={_FROM_API: not strict})

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_keys(cls, data: Any, info: pydantic.ValidationInfo) -> Any:
        """In lenient :meth:`from_api`, forget keys a newer Firecracker added."""
        context = info.context
        if not (isinstance(context, dict) and context.get(_FROM_API)):
            return data
        if not isinstance(data, Mapping) or cls.model_config.get("extra") != "forbid":
            return data
        known: set[str] = set()
        for name, field in cls.model_fields.items():
            known.add(name)
            if field.alias:
                known.add(field.alias)
            choices = field.validation_alias
            if isinstance(choices, str):
                known.add(choices)
            elif isinstance(choices, pydantic.AliasChoices):
                known.update(c for c in choices.choices if isinstance(c, str))
        return {key: value for key, value in data.items() if key in known}


class ResponseModel(APIModel):
    """Base class of the bodies only Firecracker sends: unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")
