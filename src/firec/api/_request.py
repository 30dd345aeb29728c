"""What the sync and async clients share: encoding requests, decoding answers.

Nothing here does I/O, so :class:`firec.Client` and :class:`firec.AsyncClient`
differ only in how they wait.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Annotated, Any, TypeAlias, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from firec.api import models, versions
from firec.api.models.base import _convert as convert_error
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, MAX_PAYLOAD_FLAG, Operation
from firec.api.transport import BASE_URL
from firec.api.versions import Version
from firec.errors import APIError, ValidationError

__all__ = [
    "DEFAULT",
    "Default",
    "TimeoutArg",
    "as_model",
    "build_request",
    "check_max_payload",
    "check_request",
    "check_socket_path",
    "check_timeout",
    "check_version_arg",
    "decode",
    "encode_body",
    "json_object",
    "loses_requests",
    "needs_version",
    "partial_body",
    "shortcut_model",
    "timeout_extension",
]

M = TypeVar("M", bound=models.APIModel)

#: How deep MMDS data may nest (deeper is refused before anything is sent).
MAX_JSON_DEPTH = 200

#: Paths whose requests Firecracker's API thread answers itself (the MMDS data
#: store); every other request goes through its VMM thread.
API_THREAD_PATHS = frozenset({"/mmds"})
#: Operations after which a Firecracker is booted (or failed to and exits).
LEAVES_PREBOOT = frozenset({"createSyncAction", "loadSnapshot"})
#: Seconds between two looks at a VMM thread that is still busy (see loses_requests).
SETTLE_POLL = 0.00005
#: Seconds a busy VMM thread is waited for at most; the request is then sent anyway.
SETTLE_LIMIT = 1.0
#: Seconds given to a VMM thread that cannot be seen (no /proc access, not a Unix socket).
SETTLE_BLIND = 0.002


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


def as_model(model: type[M], value: Any, argument: str) -> M:
    """``value`` as a ``model``: the model itself, or a mapping of its fields, validated.

    Keys of a mapping are the model's field names (or their API names).

    Raises:
        ValidationError: a field is refused (naming it), or ``value`` is neither
            (naming ``argument``).
    """
    if isinstance(value, model):
        return value
    if isinstance(value, Mapping):
        return model.model_validate(dict(value))
    raise ValidationError(
        argument, f"must be a {model.api_name} or a mapping of its fields, not {_kind(value)}"
    )


def shortcut_model(model: type[M], field: str, value: Any, argument: str) -> M:
    """``value`` as a ``model``; anything but the model or a mapping is the value of ``field``.

    So ``create_action("InstanceStart")`` means ``InstanceActionInfo(action_type=...)``,
    and a wrong value is refused naming ``field`` (``action_type: must be ...``).
    """
    if isinstance(value, model | Mapping):
        return as_model(model, value, argument)
    return model.model_validate({field: value})


def json_object(value: Any, argument: str) -> dict[str, Any]:
    """``value`` (a mapping, or an :class:`~firec.api.models.MmdsContentsObject`) as a JSON object.

    Keys must be strings; values JSON (``None``, booleans, numbers, strings,
    lists, mappings; no NaN or infinity), nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises:
        ValidationError: naming the path of the first value that is not JSON.
    """
    if isinstance(value, models.MmdsContentsObject):
        return value.to_api()
    if not isinstance(value, Mapping):
        raise ValidationError(argument, f"must be a JSON object (a mapping), not {_kind(value)}")
    stack: list[tuple[str, Any, int]] = [(argument, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int | float):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValidationError(
                    path, f"must be a finite number (JSON has no {item!r}), not {item!r}"
                )
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(path, f"nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValidationError(
                        f"{path}[{key!r}]", f"a key must be a string, not {_kind(key)}"
                    )
                stack.append((f"{path}.{key}", child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))
        else:
            raise ValidationError(path, f"is not a JSON value: {_kind(item)}")
    return dict(value)


def check_timeout(value: Any, argument: str = "timeout") -> None:
    """Refuse a timeout that is not ``None``, the default, or a number of seconds >= 0."""
    if value is None or value is DEFAULT:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(argument, f"must be a number of seconds or None, not {_kind(value)}")
    if not value >= 0:  # also NaN
        raise ValidationError(argument, f"must be at least 0 seconds, not {value!r}")


def check_max_payload(value: Any) -> int | None:
    """The ``max_payload_size=`` of a client: ``None`` (no limit) or a number of bytes >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            "max_payload_size", f"must be a number of bytes or None, not {_kind(value)}"
        )
    if value < 1:
        raise ValidationError("max_payload_size", f"must be at least 1 byte, not {value}")
    return value


def check_socket_path(value: Any) -> str:
    """The API socket path as a string; refused unless a ``str`` or an ``os.PathLike``."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path and "\0" not in path:
            return path
        raise ValidationError("socket_path", f"must be a non-empty path, not {value!r}")
    raise ValidationError("socket_path", f"must be a path (str or os.PathLike), not {_kind(value)}")


def check_version_arg(value: Any) -> Version | None:
    """The ``version=`` argument of a client: ``None``, a :class:`Version` or a version string."""
    if value is None or isinstance(value, Version):
        return value
    if isinstance(value, str):
        return Version.parse(value)
    raise ValidationError("version", f"must be a version string such as 1.14.2, not {_kind(value)}")


def partial_body(
    model: type[models.APIModel], update: Mapping[str, Any], argument: str = "update"
) -> dict[str, Any]:
    """The JSON of a partial update: just the fields in ``update``, each validated.

    Keys are the model's field names or their API aliases; an unknown key, or a
    value the field refuses, raises :class:`ValidationError` naming it (and
    naming ``argument`` when ``update`` is not a mapping at all).
    """
    if not isinstance(update, Mapping):
        raise ValidationError(
            argument,
            f"must be a {model.api_name} or a mapping of some of its fields, not {_kind(update)}",
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
#: The URLs of the paths any client of this process asked for (httpx.URL is immutable).
_SHARED_URLS: dict[str, httpx.URL] = {}


@functools.lru_cache(maxsize=64)
def timeout_extension(timeout: float | None) -> dict[str, float | None]:
    """httpx's ``timeout`` request extension for ``timeout`` seconds on every phase.

    Shared, so never mutate the result.
    """
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def build_request(
    method: str,
    path: str,
    data: Any,
    timeout: float | None,
    urls: dict[str, httpx.URL],
    max_payload: int | None = None,
) -> httpx.Request:
    """The :class:`httpx.Request` of one API call: ``data`` (JSON) sent to ``path``.

    ``urls`` caches the parsed URL of each path; the caller owns it. The
    request carries every header itself (no client adds any), and its
    ``timeout`` extension.

    Raises:
        ValidationError: the encoded body is longer than ``max_payload`` bytes
            (Firecracker would refuse it, and may die of the broken pipe).
    """
    url = urls.get(path)
    if url is None:
        # every client's URL of a path is the same: a new client (each Machine
        # has one) takes it from the others instead of parsing it (~15 us)
        url = _SHARED_URLS.get(path)
        if url is None:
            url = httpx.URL(BASE_URL + path)
            if len(_SHARED_URLS) >= _URL_CACHE_SIZE:
                _SHARED_URLS.clear()
            _SHARED_URLS[path] = url
        if len(urls) >= _URL_CACHE_SIZE:
            urls.clear()
        urls[path] = url
    extensions = {"timeout": timeout_extension(timeout)}
    if data is None:
        headers = _BODYLESS if method == "GET" else _EMPTY_PUT
        return httpx.Request(method, url, headers=headers, stream=_EMPTY, extensions=extensions)
    content = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if max_payload is not None and len(content) > max_payload:
        raise ValidationError(
            "body",
            f"{method} {path}: the request body is {len(content)} bytes{_largest_part(data)}, "
            f"over the limit of "
            f"{max_payload} bytes that Firecracker's API takes ({MAX_PAYLOAD_FLAG}, "
            f"{DEFAULT_MAX_PAYLOAD_SIZE} unless given). Start Firecracker with a larger "
            f"{MAX_PAYLOAD_FLAG} (Config.http_api_max_payload_size) and give the client "
            "that limit (max_payload_size=)",
        )
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


def _largest_part(data: Any) -> str:
    """Where most of a JSON body is, for the message of a body over the limit."""
    path, value = "", data
    while isinstance(value, Mapping | list) and value:
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        key, value = max(items, key=lambda item: len(json.dumps(item[1], ensure_ascii=False)))
        if isinstance(key, int):
            path += f"[{key}]"
        else:
            path += f".{key}" if path else str(key)
    if not path:
        return ""
    size = len(json.dumps(value, ensure_ascii=False).encode())
    return f" (the largest part: {path}, {size} bytes)"


@functools.cache
def _in_every_version(op: Operation) -> bool:
    return versions.has_operation(op.method, op.path, versions.OLDEST) and versions.has_operation(
        op.method, op.path, versions.LATEST
    )


def loses_requests(version: Version) -> bool:
    """Whether Firecracker ``version`` may lose an API request that follows another at once.

    Up to 1.2.0, and in 1.3.0 and 1.3.1, the VMM thread clears its API eventfd
    only *after* it has answered a request (``ApiServerAdapter::process``), and
    clears it by reading it to zero. A request whose notification arrives in
    between (the next one, sent on the heels of the answer: measured with a bare
    kept-alive ``http.client`` on v1.0.0, 1 request pair in 200 after boot on an
    idle 2-CPU host, 1 in 80 on a busy one) is never seen: the API thread then
    waits for its answer forever, and the whole API is stuck. Before boot the
    VMM thread reads the eventfd first, so only requests to a booted (or
    restored) VM are at risk. Firecracker fixed it in
    1.2.1, 1.3.2 and 1.4.0 ("fix: setting `api_event_fd` behave as a semaphore").

    The clients send such a request only once the VMM thread is asleep again
    (see :class:`firec.vm.process.VmmThreadWatch`), one at a time.
    """
    if version < Version(1, 2, 1):
        return True
    return Version(1, 3, 0) <= version < Version(1, 3, 2)


def needs_version(op: Operation, body: Any) -> bool:
    """Whether sending ``op`` with ``body`` must be checked against the connected version.

    A request without a body to an endpoint every version has cannot be
    refused for the version (once it is known to be 1.0 or newer).
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
