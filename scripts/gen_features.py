#!/usr/bin/env python3
"""Generate ``src/firec/api/_generated_features.py``: what each Firecracker minor version offers.

Reads every ``firecracker-v*.yaml`` (the official Swagger 2.0 API descriptions)
and records, per minor version ("1.0" .. "1.16"), the operations, the
definitions with their properties and enum values, the required fields, and
the body definition of each operation.

Usage::

    python scripts/gen_features.py [SPEC_DIR]

SPEC_DIR defaults to ``<repo>/../shared/firecracker-api``. The output is
formatted with ``ruff format`` so that it is stable and checked in as is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC_DIR = REPO.parent / "shared" / "firecracker-api"
OUTPUT = REPO / "src" / "firec" / "api" / "_generated_features.py"
HTTP_METHODS = ("get", "put", "patch", "post", "delete")

_SPEC_NAME = re.compile(r"^firecracker-v(\d+)\.(\d+)\.(\d+)\.yaml$")


class SpecLoader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false.

    PyYAML follows YAML 1.1, where ``Off``, ``On``, ``Yes`` and ``No`` are
    booleans; the 1.5+ specs list the log level ``Off`` unquoted.
    """


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_spec(path: Path) -> dict[str, Any]:
    """Load one specification file with :class:`SpecLoader`."""
    with path.open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=SpecLoader)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a YAML mapping")
    return data


def load_specs(spec_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Return ``(minor, full version, spec)`` for every spec file, oldest first.

    The version comes from the file name and must agree with ``info.version``.
    """
    found: list[tuple[tuple[int, int, int], str, dict[str, Any]]] = []
    for path in spec_dir.glob("firecracker-v*.yaml"):
        match = _SPEC_NAME.match(path.name)
        if match is None:
            continue
        number = (int(match[1]), int(match[2]), int(match[3]))
        spec = load_spec(path)
        full = "{}.{}.{}".format(*number)
        if str(spec.get("info", {}).get("version")) != full:
            raise SystemExit(f"{path}: info.version {spec['info'].get('version')!r} != {full}")
        found.append((number, full, spec))
    if not found:
        raise SystemExit(f"no firecracker-v*.yaml in {spec_dir}")
    found.sort(key=lambda item: item[0])
    minors = [f"{n[0]}.{n[1]}" for n, _, _ in found]
    if len(set(minors)) != len(minors):
        raise SystemExit(f"several specs for one minor version in {spec_dir}: {minors}")
    return [(f"{n[0]}.{n[1]}", full, spec) for n, full, spec in found]


def _ref_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    return None


def _nested(schema: Mapping[str, Any]) -> str | None:
    """The definition a property holds: ``$ref`` or an array of ``$ref``."""
    name = _ref_name(schema)
    if name is None and schema.get("type") == "array":
        name = _ref_name(schema.get("items") or {})
    return name


def _span(present: list[bool], minors: list[str]) -> tuple[str, str | None]:
    """First minor with the thing, and first minor after it that lacks it again."""
    first = present.index(True)
    for index in range(first + 1, len(present)):
        if not present[index]:
            if any(present[index:]):
                raise SystemExit(f"came back after removal, not representable: {present}")
            return minors[first], minors[index]
    return minors[first], None


def _timeline(values: Iterable[Any], minors: list[str]) -> tuple[tuple[str, Any], ...]:
    """``(since, value)`` for every change of value, oldest first."""
    result: list[tuple[str, Any]] = []
    for minor, value in zip(minors, values, strict=True):
        if not result or result[-1][1] != value:
            result.append((minor, value))
    return tuple(result)


def collect(specs: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """Compute every table from the loaded specs."""
    minors = [minor for minor, _, _ in specs]
    operations: dict[tuple[str, str], list[bool]] = {}
    bodies: dict[tuple[str, str], list[str | None]] = {}
    definitions: dict[str, list[bool]] = {}
    properties: dict[str, dict[str, dict[str, Any]]] = {}
    enums: dict[str, dict[str, dict[str, list[bool]]]] = {}
    enum_definitions: dict[str, dict[str, list[bool]]] = {}
    required: dict[str, list[tuple[str, ...] | None]] = {}
    count = len(specs)

    def mark(table: dict[Any, list[Any]], key: Any, index: int, value: Any = True) -> None:
        table.setdefault(key, [False if value is True else None] * count)[index] = value

    for index, (_, _, spec) in enumerate(specs):
        for path, item in spec["paths"].items():
            shared = [p for p in item.get("parameters", []) if isinstance(p, dict)]
            for method, operation in item.items():
                if method not in HTTP_METHODS:
                    continue
                key = (method.upper(), path)
                mark(operations, key, index)
                body = None
                for parameter in [*shared, *operation.get("parameters", [])]:
                    if parameter.get("in") == "body":
                        body = _ref_name(parameter.get("schema") or {})
                        if body is None:
                            raise SystemExit(f"{key}: body schema without $ref")
                bodies.setdefault(key, [None] * count)[index] = body
        for name, schema in spec["definitions"].items():
            mark(definitions, name, index)
            required.setdefault(name, [None] * count)[index] = tuple(schema.get("required", ()))
            if "enum" in schema:
                for value in schema["enum"]:
                    mark(enum_definitions.setdefault(name, {}), str(value), index)
            for prop, prop_schema in (schema.get("properties") or {}).items():
                record = properties.setdefault(name, {}).setdefault(
                    prop, {"present": [False] * count, "nested": [None] * count}
                )
                record["present"][index] = True
                record["nested"][index] = _nested(prop_schema)
                for value in prop_schema.get("enum", ()):
                    if not isinstance(value, str):
                        raise SystemExit(f"{name}.{prop}: non-string enum value {value!r}")
                    mark(enums.setdefault(name, {}).setdefault(prop, {}), value, index)

    def props_table(name: str) -> dict[str, tuple[str, str | None, str | None, str | None]]:
        table = {}
        for prop, record in sorted(properties.get(name, {}).items()):
            since, removed = _span(record["present"], minors)
            named = {n for n in record["nested"] if n is not None}
            if len(named) > 1:
                raise SystemExit(f"{name}.{prop} holds several definitions: {named}")
            nested = named.pop() if named else None
            nested_since = None
            if nested is not None:
                nested_since = minors[record["nested"].index(nested)]
            table[prop] = (since, removed, nested, nested_since)
        return table

    return {
        "minors": minors,
        "spec_versions": {minor: full for minor, full, _ in specs},
        "operations": {k: _span(v, minors) for k, v in sorted(operations.items())},
        "bodies": {
            k: _timeline(v, minors)
            for k, v in sorted(bodies.items())
            if any(value is not None for value in v)
        },
        "definitions": {k: _span(v, minors) for k, v in sorted(definitions.items())},
        "properties": {name: props_table(name) for name in sorted(definitions)},
        "enums": {
            name: {
                prop: {value: _span(present, minors) for value, present in values.items()}
                for prop, values in sorted(by_prop.items())
            }
            for name, by_prop in sorted(enums.items())
        },
        "enum_definitions": {
            name: {value: _span(present, minors) for value, present in values.items()}
            for name, values in sorted(enum_definitions.items())
        },
        "required": {
            name: tuple(
                (since, value) for since, value in _timeline(timeline, minors) if value is not None
            )
            for name, timeline in sorted(required.items())
        },
    }


HEADER = '''\
# GENERATED FILE, DO NOT EDIT.
# Generated by scripts/gen_features.py from the official Firecracker API
# specifications ({first} .. {last}); regenerate with:
#     python scripts/gen_features.py [SPEC_DIR]
"""What each Firecracker minor version's API offers (generated; see firec.api.versions).

Versions are minor keys ("1.0" .. "1.16"). A span ``(since, removed)`` means
"present from ``since`` up to, not including, ``removed``" (``None``: still
present in the newest known version).
"""

from __future__ import annotations

Span = tuple[str, str | None]
'''


def render(tables: dict[str, Any]) -> str:
    """The (unformatted) Python source of ``_generated_features.py``."""
    minors = tables["minors"]
    spec_versions = tables["spec_versions"]
    lines = [
        HEADER.format(first=spec_versions[minors[0]], last=spec_versions[minors[-1]]),
        "MINORS: tuple[str, ...] = " + repr(tuple(minors)),
        '"""Every known minor version, oldest first."""',
        "",
        "SPEC_VERSIONS: dict[str, str] = " + repr(spec_versions),
        '"""The release whose specification describes each minor version."""',
        "",
        "OPERATIONS: dict[tuple[str, str], Span] = " + repr(tables["operations"]),
        '"""(METHOD, path template) -> span of the operation."""',
        "",
        "BODIES: dict[tuple[str, str], tuple[tuple[str, str | None], ...]] = "
        + repr(tables["bodies"]),
        '"""(METHOD, path template) -> ((since, body definition or None), ...), oldest first."""',
        "",
        "DEFINITIONS: dict[str, Span] = " + repr(tables["definitions"]),
        '"""Definition name -> span of the definition."""',
        "",
        "PROPERTIES: dict[str, dict[str, tuple[str, str | None, str | None, str | None]]] = "
        + repr(tables["properties"]),
        '"""Definition -> property -> (since, removed, nested definition, nested since).',
        "",
        "The nested definition is the one a ``$ref`` (or an array of ``$ref``) property",
        "holds; ``nested since`` is the first minor whose specification says so (older",
        'ones describe the property as a bare ``object``)."""',
        "",
        "ENUMS: dict[str, dict[str, dict[str, Span]]] = " + repr(tables["enums"]),
        '"""Definition -> property -> enum value -> span of the value."""',
        "",
        "ENUM_DEFINITIONS: dict[str, dict[str, Span]] = " + repr(tables["enum_definitions"]),
        '"""String enum definition (CpuTemplate) -> value -> span of the value."""',
        "",
        "REQUIRED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = "
        + repr(tables["required"]),
        '"""Definition -> ((since, required properties), ...), oldest first."""',
        "",
    ]
    return "\n".join(lines)


def ruff_format(source: str) -> str:
    """Format ``source`` with ruff, using the repository's configuration."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(OUTPUT), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff format failed: {done.stderr.strip()}")
    return done.stdout


def generate(spec_dir: Path = DEFAULT_SPEC_DIR) -> str:
    """The formatted content of ``_generated_features.py`` for the specs in ``spec_dir``."""
    return ruff_format(render(collect(load_specs(spec_dir))))


def main(argv: list[str]) -> int:
    """Write ``src/firec/api/_generated_features.py``."""
    spec_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_SPEC_DIR
    if not spec_dir.is_dir():
        print(f"spec folder not found: {spec_dir}", file=sys.stderr)
        return 2
    OUTPUT.write_text(generate(spec_dir), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
