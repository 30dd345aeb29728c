"""Every request body the models produce, against every official API specification.

For each Firecracker minor version, each representative body (all optional
fields set, minimal, every enum value) is validated against that version's
schema with openapi-schema-validator, and compared with what
:func:`firec.versions.check_body` says: it accepts exactly what the schema
accepts. Also checks that ``src/firec/_features.py`` is what the generator
makes of the specs. Skipped when ``../shared/firecracker-api`` is absent.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from openapi_schema_validator import OAS30WriteValidator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from firec import _features
from firec import models as m
from firec.errors import UnsupportedError
from firec.versions import Version, body_definition, check_body, has_operation
from model_samples import enum_variants, full_samples, minimal_samples

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = (REPO / ".." / "shared" / "firecracker-api").resolve()
SPEC_FILES = sorted(SPEC_DIR.glob("firecracker-v*.yaml")) if SPEC_DIR.is_dir() else []

pytestmark = pytest.mark.skipif(
    not SPEC_FILES, reason=f"no Firecracker API specifications in {SPEC_DIR}"
)

# Spec errata, checked against a real Firecracker v1.4.0: the 1.4 to 1.10
# specifications declare CpuConfig itself as "type: string" (it takes a JSON
# object), and 1.4 to 1.13 declare these CpuConfig properties as bare objects,
# yet Firecracker parses arrays there (it answers a map with "invalid type: map,
# expected a sequence"). The 1.14 specification fixed both.
CPU_CONFIG_ARRAYS = (
    "cpuid_modifiers",
    "msr_modifiers",
    "reg_modifiers",
    "vcpu_features",
    "kvm_capabilities",
)


def _load_generator() -> ModuleType:
    path = REPO / "scripts" / "gen_features.py"
    spec = importlib.util.spec_from_file_location("gen_features", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_features", module)
    spec.loader.exec_module(module)
    return module


def _version_of(path: Path) -> Version:
    match = re.search(r"v(\d+\.\d+\.\d+)\.yaml$", path.name)
    assert match is not None
    return Version.parse(match[1])


@cache
def _spec(minor: str) -> dict[str, Any]:
    path = next(p for p in SPEC_FILES if _version_of(p).minor_key == minor)
    spec: dict[str, Any] = _load_generator().load_spec(path)
    return spec


@cache
def _strict_spec(minor: str) -> dict[str, Any]:
    """The spec as Firecracker applies it: unknown fields refused, errata fixed."""
    spec = copy.deepcopy(_spec(minor))
    for definition in spec["definitions"].values():
        if definition.get("properties") and "additionalProperties" not in definition:
            # Firecracker's request structs refuse unknown fields (serde deny_unknown_fields).
            definition["additionalProperties"] = False
    cpu_config = spec["definitions"].get("CpuConfig", {})
    if cpu_config.get("type") == "string":
        cpu_config["type"] = "object"
    cpu = cpu_config.get("properties", {})
    for name in CPU_CONFIG_ARRAYS:
        if name in cpu and cpu[name].get("type") == "object":
            assert "properties" not in cpu[name] and "items" not in cpu[name]
            cpu[name] = {"type": "array"}
    return spec


def _schema_errors(definition: str, body: Any, minor: str) -> list[str]:
    spec = _strict_spec(minor)
    if definition not in spec["definitions"]:
        return [f"no definition {definition} in the {minor} specification"]
    uri = f"urn:firecracker-api:{minor}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(spec, default_specification=DRAFT4)
    )
    validator = OAS30WriteValidator(
        {"$ref": f"{uri}#/definitions/{definition}"},
        registry=registry,
        format_checker=oas30_format_checker,
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]


def _samples() -> list[m.APIModel]:
    return full_samples() + minimal_samples() + enum_variants()


MINORS = [_version_of(p).minor_key for p in SPEC_FILES]


def test_every_body_definition_has_samples() -> None:
    bodies = {d for timeline in _features.BODIES.values() for _, d in timeline if d}
    covered = {sample.api_name for sample in _samples()}
    assert bodies <= covered


@pytest.mark.parametrize("minor", MINORS)
def test_check_body_accepts_exactly_what_the_schema_accepts(minor: str) -> None:
    version = Version.parse(_features.SPEC_VERSIONS[minor])
    accepted_somewhere = 0
    for sample in _samples():
        body = sample.to_api()
        errors = _schema_errors(sample.api_name, body, minor)
        try:
            check_body(sample.api_name, body, version)
        except UnsupportedError as refusal:
            assert errors, (
                f"{minor}: check_body refused {body} ({refusal}) but the schema accepts it"
            )
        else:
            accepted_somewhere += 1
            assert not errors, f"{minor}: check_body accepted {body}, the schema says {errors}"
    assert accepted_somewhere > 0


@pytest.mark.parametrize("minor", MINORS)
def test_operations_and_their_bodies_match_the_spec(minor: str) -> None:
    version = Version.parse(_features.SPEC_VERSIONS[minor])
    spec = _spec(minor)
    in_spec = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "patch", "post", "delete"}:
                ref = None
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "body":
                        ref = parameter["schema"]["$ref"].rsplit("/", 1)[-1]
                in_spec[(method.upper(), path)] = ref
    known = {op for op in _features.OPERATIONS if has_operation(*op, version)}
    assert known == set(in_spec)
    for (method, path), ref in in_spec.items():
        assert body_definition(method, path, version) == ref, f"{method} {path}"


@pytest.mark.parametrize("minor", MINORS)
def test_spec_enums_are_model_enums(minor: str) -> None:
    """Every enum value of every version parses in the models (``Off`` stays a string)."""
    for name, definition in _spec(minor)["definitions"].items():
        for prop, schema in (definition.get("properties") or {}).items():
            for value in schema.get("enum", ()):
                assert isinstance(value, str), f"{name}.{prop}: {value!r}"
        for value in definition.get("enum", ()):
            assert m.CpuTemplate(value).value == value


def test_generated_feature_table_is_up_to_date() -> None:
    generator = _load_generator()
    expected = generator.generate(SPEC_DIR)
    current = (REPO / "src" / "firec" / "_features.py").read_text(encoding="utf-8")
    assert current == expected, "src/firec/_features.py is stale: run scripts/gen_features.py"
