"""Every request body the models produce, against every official API specification.

For each Firecracker minor version, each representative body (all optional
fields set, minimal, every enum value) is validated against that version's
schema with openapi-schema-validator, and compared with what
:func:`firec.api.versions.check_body` says: it accepts exactly what the schema
accepts. Also checks that ``src/firec/api/_generated_features.py`` is what the generator
makes of the specs. Skipped when ``../shared/firecracker-api`` is absent.
"""

from __future__ import annotations

import pytest

from firec.api import _generated_features as _features
from firec.api import models as m
from firec.api.versions import Version, body_definition, check_body, has_operation
from firec.errors import UnsupportedError
from model_samples import enum_variants, full_samples, minimal_samples
from spec_schema import MINORS, NO_SPECS, REPO, SPEC_DIR, SPEC_FILES, load_generator, spec
from spec_schema import schema_errors as _schema_errors

pytestmark = pytest.mark.skipif(not SPEC_FILES, reason=NO_SPECS)


def _samples() -> list[m.APIModel]:
    return full_samples() + minimal_samples() + enum_variants()


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
    in_spec = {}
    for path, item in spec(minor)["paths"].items():
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
    for name, definition in spec(minor)["definitions"].items():
        for prop, schema in (definition.get("properties") or {}).items():
            for value in schema.get("enum", ()):
                assert isinstance(value, str), f"{name}.{prop}: {value!r}"
        for value in definition.get("enum", ()):
            assert m.CpuTemplate(value).value == value


def test_generated_feature_table_is_up_to_date() -> None:
    generator = load_generator()
    expected = generator.generate(SPEC_DIR)
    current = (REPO / "src" / "firec" / "api" / "_generated_features.py").read_text(
        encoding="utf-8"
    )
    assert current == expected, (
        "src/firec/api/_generated_features.py is stale: run scripts/gen_features.py"
    )
