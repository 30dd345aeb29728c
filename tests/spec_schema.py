"""The official API specifications as JSON schemas, for the tests that check bodies against them.

Shared by ``test_conformance.py`` (every sample body, every version), the
PATCH checks of ``test_client_inputs.py`` and the property-based sweep of
``test_sweep.py``. The specs are read from ``../shared/firecracker-api``
beside the checkout; :data:`SPEC_FILES` is empty when it is absent (the tests
using it then skip).
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

import yaml
from openapi_schema_validator import OAS30WriteValidator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from firec.api.versions import Version

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = (REPO / ".." / "shared" / "firecracker-api").resolve()
NO_SPECS = f"no Firecracker API specifications in {SPEC_DIR}"

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

#: Fields real Firecracker requires though no specification says so: definition ->
#: field -> the first minor version. Measured on v1.14.2 (a body without them gets
#: 400 "missing field `total_size_mib`" / "missing field `requested_size_mib`");
#: the serde structs of 1.14 to 1.16 give them no default.
REQUIRED_BEYOND_SPEC: dict[str, dict[str, str]] = {
    "MemoryHotplugConfig": {"total_size_mib": "1.14"},
    "MemoryHotplugSizeUpdate": {"requested_size_mib": "1.14"},
}


def load_generator() -> ModuleType:
    """``scripts/gen_features.py``, as a module."""
    path = REPO / "scripts" / "gen_features.py"
    spec = importlib.util.spec_from_file_location("gen_features", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_features", module)
    spec.loader.exec_module(module)
    return module


def version_of(path: Path) -> Version:
    """The release a spec file describes (from its name)."""
    match = re.search(r"v(\d+\.\d+\.\d+)\.yaml$", path.name)
    assert match is not None
    return Version.parse(match[1])


SPEC_FILES = (
    sorted(SPEC_DIR.glob("firecracker-v*.yaml"), key=version_of) if SPEC_DIR.is_dir() else []
)
"""The specification files, oldest first."""

MINORS = [version_of(p).minor_key for p in SPEC_FILES]
"""The minor versions ("1.0" ...) whose specification is present, oldest first."""


@cache
def _loader() -> type[yaml.SafeLoader]:
    """The generator's YAML loader (1.2 booleans), on libyaml when there is one (10x faster)."""
    generator_loader: type[yaml.SafeLoader] = load_generator().SpecLoader
    base = getattr(yaml, "CSafeLoader", None)
    if base is None:
        return generator_loader
    fast = type("FastSpecLoader", (base,), {})
    fast.yaml_implicit_resolvers = generator_loader.yaml_implicit_resolvers
    return fast  # type: ignore[no-any-return]


@cache
def spec(minor: str) -> dict[str, Any]:
    """The specification of minor version ``minor``, read as the generator reads it."""
    path = next(p for p in SPEC_FILES if version_of(p).minor_key == minor)
    with path.open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = yaml.load(stream, Loader=_loader())
    return loaded


@cache
def strict_spec(minor: str) -> dict[str, Any]:
    """The spec as Firecracker applies it: unknown fields refused, errata fixed."""
    strict = copy.deepcopy(spec(minor))
    for definition in strict["definitions"].values():
        if definition.get("properties") and "additionalProperties" not in definition:
            # Firecracker's request structs refuse unknown fields (serde deny_unknown_fields).
            definition["additionalProperties"] = False
    cpu_config = strict["definitions"].get("CpuConfig", {})
    if cpu_config.get("type") == "string":
        cpu_config["type"] = "object"
    cpu = cpu_config.get("properties", {})
    for name in CPU_CONFIG_ARRAYS:
        if name in cpu and cpu[name].get("type") == "object":
            assert "properties" not in cpu[name] and "items" not in cpu[name]
            cpu[name] = {"type": "array"}
    for name, fields in REQUIRED_BEYOND_SPEC.items():
        if name in strict["definitions"]:
            required = strict["definitions"][name].setdefault("required", [])
            required += [f for f in fields if f not in required]
    return strict


def required(minor: str, definition: str) -> set[str]:
    """The properties of ``definition`` that Firecracker ``minor`` requires (errata included)."""
    found = strict_spec(minor)["definitions"].get(definition, {})
    return set(found.get("required", ()))


@cache
def _validator(minor: str, definition: str, partial: bool) -> OAS30WriteValidator:
    document = strict_spec(minor)
    if partial:  # a PATCH body: the top level may leave out required fields
        document = copy.deepcopy(document)
        document["definitions"][definition].pop("required", None)
    uri = f"urn:firecracker-api:{minor}:{int(partial)}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT4)
    )
    return OAS30WriteValidator(
        {"$ref": f"{uri}#/definitions/{definition}"},
        registry=registry,
        format_checker=oas30_format_checker,
    )


def schema_errors(definition: str, body: Any, minor: str, *, partial: bool = False) -> list[str]:
    """Why the ``minor`` spec refuses ``body`` as a ``definition`` (empty: it accepts it)."""
    if definition not in strict_spec(minor)["definitions"]:
        return [f"no definition {definition} in the {minor} specification"]
    validator = _validator(minor, definition, partial)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]


def operation_body(minor: str, method: str, path: str) -> tuple[bool, str | None]:
    """Whether the ``minor`` spec has the operation, and its body's definition."""
    item = spec(minor)["paths"].get(path)
    if item is None or method.lower() not in item:
        return False, None
    for parameter in item[method.lower()].get("parameters", []):
        if parameter.get("in") == "body":
            return True, str(parameter["schema"]["$ref"].rsplit("/", 1)[-1])
    return True, None
