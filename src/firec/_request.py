"""What the sync and async clients share: encoding requests, decoding answers.

Nothing here does I/O, so :class:`firec.Client` and :class:`firec.AsyncClient`
differ only in how they wait.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from typing import Annotated, Any, TypeAlias

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from . import models, versions
from .errors import APIError, ValidationError
from .models.base import _convert as convert_error
from .operations import Operation
from .transport import BASE_URL
from .versions import Version

__all__ = [
    "DEFAULT",
    "Default",
    "TimeoutArg",
    "build_request",
    "check_request",
    "decode",
    "encode_body",
    "needs_version",
    "partial_body",
    "timeout_extension",
]


class Default(enum.Enum):
    """Marker for "use the client's own timeout"."""

    DEFAULT = "DEFAULT"


DEFAULT = Default.DEFAULT

#: A per-call timeout: seconds, ``None`` for no timeout, or the client's default.
TimeoutArg: TypeAlias = float | Default | None


def encode_body(body: Any) -> Any:
    """The JSON value sent for ``body`` (a model, or plain JSON data)."""
    if isinstance(body, models.APIModel):
        return body.to_api()
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def partial_body(model: type[models.APIModel], update: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of a partial update: just the fields in ``update``, each validated.

    Keys are the model's field names or their API aliases; an unknown key, or a
    value the field refuses, raises :class:`ValidationError` naming it.
    """
    if not isinstance(update, Mapping):
        raise ValidationError(
            "", f"a {model.api_name} update must be a mapping of fields, not {_kind(update)}"
        )
    by_key = {name: name for name in model.model_fields}
    by_key |= {f.alias: name for name, f in model.model_fields.items() if f.alias}
    body: dict[str, Any] = {}
    for key, value in update.items():
        name = by_key.get(key) if isinstance(key, str) else None
        if name is None:
            known = ", ".join(sorted(model.model_fields))
            raise ValidationError(str(key), f"is not a field of {model.api_name} (known: {known})")
        adapter = _field_adapter(model, name)
        try:
            validated = adapter.validate_python(value)
        except PydanticValidationError as exc:
            error = convert_error(exc)
            pairs = [(_join(key, field), reason) for field, reason in error.errors]
            raise ValidationError(pairs[0][0], pairs[0][1], errors=pairs) from None
        if validated is not None:
            info = model.model_fields[name]
            body[info.alias or name] = adapter.dump_python(
                validated, mode="json", exclude_none=True
            )
    return body


@functools.cache
def _field_adapter(model: type[models.APIModel], name: str) -> TypeAdapter[Any]:
    """A validator of one field of ``model`` alone, with all its constraints."""
    info = model.model_fields[name]
    field_type: Any = info.annotation
    if info.metadata:  # Annotated needs at least one annotation besides the type
        field_type = Annotated[field_type, *info.metadata]
    return TypeAdapter(field_type)


def _join(key: str, field: str) -> str:
    if not field:
        return key
    return key + field if field.startswith("[") else f"{key}.{field}"


def _kind(value: Any) -> str:
    """``value``'s type, for messages (``"a str"``, ``"an int"``)."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


#: Headers of a request without a body, and the first ones of a request with one.
_HEADERS = ((b"Host", b"localhost"), (b"Accept", b"application/json"))
_BODYLESS = httpx.Headers(list(_HEADERS))
_EMPTY_PUT = httpx.Headers([*_HEADERS, (b"Content-Length", b"0")])
_EMPTY = httpx.ByteStream(b"")
#: How many request URLs a client remembers (paths with ids vary a little).
_URL_CACHE_SIZE = 256


@functools.lru_cache(maxsize=64)
def timeout_extension(timeout: float | None) -> dict[str, float | None]:
    """httpx's ``timeout`` request extension for ``timeout`` seconds on every phase.

    Shared, so never mutate the result.
    """
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def build_request(
    method: str, path: str, data: Any, timeout: float | None, urls: dict[str, httpx.URL]
) -> httpx.Request:
    """The :class:`httpx.Request` of one API call: ``data`` (JSON) sent to ``path``.

    ``urls`` caches the parsed URL of each path; the caller owns it. The
    request carries every header itself (no client adds any), and its
    ``timeout`` extension.
    """
    url = urls.get(path)
    if url is None:
        url = httpx.URL(BASE_URL + path)
        if len(urls) >= _URL_CACHE_SIZE:
            urls.clear()
        urls[path] = url
    extensions = {"timeout": timeout_extension(timeout)}
    if data is None:
        headers = _BODYLESS if method == "GET" else _EMPTY_PUT
        return httpx.Request(method, url, headers=headers, stream=_EMPTY, extensions=extensions)
    content = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    headers = httpx.Headers(
        [
            *_HEADERS,
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"%d" % len(content)),
        ]
    )
    return httpx.Request(
        method, url, headers=headers, stream=httpx.ByteStream(content), extensions=extensions
    )


@functools.cache
def _in_every_version(op: Operation) -> bool:
    return versions.has_operation(op.method, op.path, versions.OLDEST) and versions.has_operation(
        op.method, op.path, versions.LATEST
    )


def needs_version(op: Operation, body: Any) -> bool:
    """Whether sending ``op`` with ``body`` must be checked against the connected version.

    A request without a body to an endpoint every version has cannot be
    refused for the version: it is sent without asking the version first.
    """
    return body is not None or not _in_every_version(op)


def check_request(op: Operation, body: Any, version: Version) -> None:
    """Refuse, before sending, what Firecracker ``version`` lacks."""
    versions.check_operation(op.method, op.path, version)
    if op.body is not None and body is not None:
        versions.check_body(op.body, body, version, partial=op.method == "PATCH")


def decode(op: Operation, response: httpx.Response) -> Any:
    """The parsed answer to ``op``, or :class:`APIError` carrying Firecracker's message."""
    if response.status_code >= 300:
        raise APIError(
            response.status_code, _fault_message(response), method=op.method, path=response.url.path
        )
    if op.response is None or response.status_code == 204 or not response.content:
        return None
    try:
        data = response.json()
    except json.JSONDecodeError as exc:
        raise ValidationError(
            "", f"{op} answered with a body that is not JSON: {response.text[:200]!r}"
        ) from exc
    if op.response == "object":
        return data
    model: type[models.APIModel] = getattr(models, op.response)
    return model.from_api(data)


def _fault_message(response: httpx.Response) -> str:
    """Firecracker's explanation: the API layer's ``fault_message``, or micro_http's ``error``.

    micro_http's ``{ "error": "...\nAll previous ..." }`` has a raw newline in
    its string, so it is parsed leniently.
    """
    text = response.text
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return text.strip() or response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(data, Mapping):
        for key in ("fault_message", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return text.strip()
