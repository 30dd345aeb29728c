"""Firecracker versions, and what each one's API accepts.

firec speaks to every Firecracker from 1.0 on. The models
(:mod:`firec.api.models`) are the union of all versions; this module knows,
from the official API specifications of 1.0 to 1.16 (see
:mod:`firec.api._generated_features`), which operations, fields and enum values a given
version has, so that a request it cannot take is refused *before* it is sent,
with an error naming the feature and the version that introduced it::

    >>> from firec.errors import UnsupportedError
    >>> from firec.api.versions import Version, check_operation
    >>> try:
    ...     check_operation("PUT", "/pmem/{id}", Version.parse("1.13.0"))
    ... except UnsupportedError as exc:
    ...     print(exc.feature, "|", exc.introduced)
    PUT /pmem/{id} (pmem devices) | 1.14

Versions newer than the newest known one are assumed to accept everything the
newest one does; versions before 1.0 are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from firec.api import _generated_features as _features
from firec.errors import UnsupportedError, ValidationError

__all__ = [
    "KNOWN_VERSIONS",
    "LATEST",
    "OLDEST",
    "Version",
    "body_definition",
    "check_body",
    "check_operation",
    "check_supported",
    "has_field",
    "has_operation",
]

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~][0-9A-Za-z.+~-]*)?\s*$")


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """A Firecracker release number: ordered and hashable.

    >>> Version.parse("v1.0.0-44-gc73a27cb-dirty") < Version.parse("1.14.2")
    True
    """

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read ``"1.14.2"``, ``"v1.14.2"``, ``"1.16"`` or a git-describe
        string such as ``"v1.0.0-44-gc73a27cb-dirty"`` (the suffix is ignored).

        Raises:
            firec.errors.ValidationError: ``text`` is not a version.
        """
        match = _VERSION.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValidationError(
                "version", f"{text!r} is not a Firecracker version (expected e.g. 1.14.2)"
            )
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    @property
    def minor_key(self) -> str:
        """``"major.minor"``, the granularity of the feature tables (``"1.14"``)."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


KNOWN_VERSIONS: tuple[Version, ...] = tuple(
    Version.parse(_features.SPEC_VERSIONS[minor]) for minor in _features.MINORS
)
"""The releases whose API specification firec knows, one per minor version, oldest first."""

LATEST: Version = KNOWN_VERSIONS[-1]
"""The newest known release; newer ones are assumed to accept what it accepts."""

OLDEST: Version = Version(KNOWN_VERSIONS[0].major, KNOWN_VERSIONS[0].minor, 0)
"""The oldest supported release (1.0.0)."""

_ORDER = {minor: index for index, minor in enumerate(_features.MINORS)}

_OPERATION_NAMES = {
    "/balloon/hinting/start": "balloon free page hinting",
    "/balloon/hinting/status": "balloon free page hinting",
    "/balloon/hinting/stop": "balloon free page hinting",
    "/cpu-config": "custom CPU templates",
    "/entropy": "entropy device",
    "/hotplug/memory": "memory hotplug",
    "/pmem/{id}": "pmem devices",
    "/serial": "serial device",
}


def check_supported(version: Version) -> None:
    """Refuse a Firecracker older than 1.0, whose API firec does not speak.

    Raises:
        firec.errors.UnsupportedError: ``version`` is before 1.0 ("the firec SDK
            ... needs Firecracker 1.0 or newer; the connected Firecracker is 0.24.4").
    """
    if version < OLDEST:
        raise UnsupportedError(
            "the firec SDK (the API changed before 1.0)",
            introduced=OLDEST.minor_key,
            connected=str(version),
        )


def _minor(version: Version) -> str:
    """The minor key whose tables apply to ``version``."""
    check_supported(version)
    if version.minor_key in _ORDER:
        return version.minor_key
    if (version.major, version.minor) > (LATEST.major, LATEST.minor):
        return LATEST.minor_key
    # A minor between known ones (none today): use the newest older one.
    older = [v for v in KNOWN_VERSIONS if v < version]
    return older[-1].minor_key


def _present(span: tuple[str, str | None], minor: str) -> bool:
    since, removed = span
    index = _ORDER[minor]
    return _ORDER[since] <= index and (removed is None or index < _ORDER[removed])


def _operation_label(method: str, path: str) -> str:
    label = f"{method} {path}"
    name = _OPERATION_NAMES.get(path)
    return f"{label} ({name})" if name else label


def has_operation(method: str, path_template: str, version: Version) -> bool:
    """Whether ``version`` has the operation (``"PUT"``, ``"/drives/{drive_id}"``)."""
    span = _features.OPERATIONS.get((method.upper(), path_template))
    return span is not None and _present(span, _minor(version))


def check_operation(method: str, path_template: str, version: Version) -> None:
    """Refuse an operation the Firecracker ``version`` does not have.

    ``path_template`` is the path as the specification writes it
    (``"/drives/{drive_id}"``).

    Raises:
        firec.errors.UnsupportedError: the version lacks the operation (or
            is older than 1.0).
    """
    method = method.upper()
    minor = _minor(version)
    span = _features.OPERATIONS.get((method, path_template))
    if span is None:
        raise UnsupportedError(_operation_label(method, path_template), connected=str(version))
    if not _present(span, minor):
        raise UnsupportedError(
            _operation_label(method, path_template),
            introduced=span[0],
            removed=span[1],
            connected=str(version),
        )


def body_definition(method: str, path_template: str, version: Version) -> str | None:
    """The name of the definition the operation's body uses in ``version``.

    ``None`` when the operation takes no body or the version lacks it.
    """
    key = (method.upper(), path_template)
    minor = _minor(version)
    span = _features.OPERATIONS.get(key)
    if span is None or not _present(span, minor):
        return None
    current: str | None = None
    for since, definition in _features.BODIES.get(key, ()):
        if _ORDER[since] <= _ORDER[minor]:
            current = definition
    return current


def has_field(definition: str, field: str, version: Version) -> bool:
    """Whether ``definition`` has the property ``field`` in ``version`` (API names)."""
    span = _features.PROPERTIES.get(definition, {}).get(field)
    return span is not None and _present(span[:2], _minor(version))


def _required(definition: str, minor: str) -> tuple[str, ...]:
    current: tuple[str, ...] = ()
    for since, names in _features.REQUIRED.get(definition, ()):
        if _ORDER[since] <= _ORDER[minor]:
            current = names
    return current


def _optional_since(definition: str, field: str, minor: str) -> str | None:
    """The first minor after ``minor`` where ``field`` is no longer required."""
    for since, names in _features.REQUIRED.get(definition, ()):
        if _ORDER[since] > _ORDER[minor] and field not in names:
            return since
    return None


class _Walker:
    """Checks one body against one version's tables."""

    def __init__(self, version: Version, where: str, partial: bool) -> None:
        self.version = version
        self.minor = _minor(version)
        self.where = where
        self.partial = partial

    def label(self, path: str, owner: str) -> str:
        place = f"{self.where} {path}" if self.where and path else self.where or path
        return f"field {place} ({owner})"

    def refuse(self, feature: str, span: tuple[str, str | None] | None) -> UnsupportedError:
        if span is None:
            return UnsupportedError(feature, connected=str(self.version))
        since, removed = span
        introduced = since
        if removed is not None and _ORDER[self.minor] >= _ORDER[removed]:
            # Gone: say when it went (and since when it had existed).
            return UnsupportedError(
                feature, introduced=introduced, removed=removed, connected=str(self.version)
            )
        return UnsupportedError(feature, introduced=introduced, connected=str(self.version))

    def value(self, definition: str, value: Any, path: str, owner: str = "") -> None:
        owner = owner or definition
        if definition in _features.ENUM_DEFINITIONS:
            self.enum_value(_features.ENUM_DEFINITIONS[definition], value, path, owner)
            return
        span = _features.DEFINITIONS.get(definition)
        if span is not None and not _present(span, self.minor):
            feature = self.label(path, owner) if path else f"{definition} request body"
            raise self.refuse(feature, span)
        if isinstance(value, Mapping):
            self.mapping(definition, value, path)

    def enum_value(
        self, values: Mapping[str, tuple[str, str | None]], value: Any, path: str, owner: str
    ) -> None:
        if not isinstance(value, str):
            return
        span = values.get(value)
        if span is None or not _present(span, self.minor):
            feature = f"value {value!r} of {self.label(path, owner)}"
            raise self.refuse(feature, span)

    def mapping(self, definition: str, body: Mapping[str, Any], path: str) -> None:
        properties = _features.PROPERTIES.get(definition)
        if not properties:
            return  # a free-form object (MmdsContentsObject), or unknown
        for key, item in body.items():
            where = f"{path}.{key}" if path else str(key)
            owner = f"{definition}.{key}"
            entry = properties.get(key)
            if entry is None:
                raise self.refuse(self.label(where, owner), None)
            since, removed, nested, nested_since = entry
            if not _present((since, removed), self.minor):
                raise self.refuse(self.label(where, owner), (since, removed))
            if item is None:
                continue
            enum = _features.ENUMS.get(definition, {}).get(key)
            if enum is not None:
                self.enum_value(enum, item, where, owner)
            if nested is None or nested_since is None:
                continue
            if _ORDER[nested_since] > _ORDER[self.minor]:
                continue  # this version's spec only says "object": nothing to check
            if isinstance(item, list):
                for index, element in enumerate(item):
                    self.value(nested, element, f"{where}[{index}]", owner)
            else:
                self.value(nested, item, where, owner)
        for name in _required(definition, self.minor):
            if body.get(name) is not None or (self.partial and not path):
                continue
            where = f"{path}.{name}" if path else name
            later = _optional_since(definition, name, self.minor)
            if later is None:
                raise ValidationError(where, f"is required by Firecracker {self.version}")
            raise UnsupportedError(
                f"leaving out {self.label(where, f'{definition}.{name}')}",
                introduced=later,
                connected=str(self.version),
            )


def check_body(
    definition: str,
    body: Mapping[str, Any] | list[Any] | Any,
    version: Version,
    *,
    where: str = "",
    partial: bool = False,
) -> None:
    """Refuse a request body that Firecracker ``version`` cannot take.

    ``body`` is the JSON body as :meth:`firec.api.models.APIModel.to_api` produces
    it, of the API definition ``definition`` (``"MachineConfiguration"``; see
    :func:`body_definition`). Nested definitions and arrays are followed.
    ``where`` prefixes field names in messages (e.g. ``"machine-config"``).
    ``partial=True`` is for ``PATCH`` bodies: the top-level required fields
    may then be left out (Firecracker takes partial updates there).

    Raises:
        firec.errors.UnsupportedError: the first field, enum value or
            omitted field the version does not accept, e.g. feature
            ``"field machine-config huge_pages (MachineConfiguration.huge_pages)"``,
            introduced ``"1.7"``.
        firec.errors.ValidationError: a field every version requires is missing
            (not raised for the top level of a ``partial`` body).
    """
    walker = _Walker(version, where, partial)
    if isinstance(body, list):
        for index, element in enumerate(body):
            walker.value(definition, element, f"[{index}]")
    else:
        walker.value(definition, body, "")
