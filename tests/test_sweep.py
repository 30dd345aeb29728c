"""The sweep of bad input: every request model and every client method, property-based.

Hypothesis draws request bodies from the official specifications (every
property of every version), mixing valid values with bad ones: wrong types,
numbers out of range, unknown enumeration strings, the right ones in the wrong
case, extra keys, missing required keys, and (for the clients) strings so long
that the body is over Firecracker's payload limit. Whatever it draws:

* firec refuses it with a :mod:`firec.errors` error whose message names the
  field (never a builtin exception, never pydantic's), and sends nothing; or
* firec takes it, and the body it produces (or sends) is one the spec of the
  version at hand accepts (as Firecracker applies it: unknown keys refused).

Runs in CI: derandomized (the same examples every run), no example database,
a few dozen examples per model or method.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firec
from firec.api import _generated_features as _features
from firec.api import models as m
from firec.api.operations import DEFAULT_MAX_PAYLOAD_SIZE, OPERATIONS, Operation
from firec.api.versions import Version, check_body
from firec.errors import FirecError, UnsupportedError, ValidationError
from model_samples import full_samples, minimal_samples
from spec_schema import MINORS, NO_SPECS, SPEC_FILES, operation_body, schema_errors, strict_spec
from tests.support import Recorder

pytestmark = pytest.mark.skipif(not SPEC_FILES, reason=NO_SPECS)

SWEEP = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REQUEST_MODELS = sorted(
    name
    for name, cls in m.MODELS.items()
    if not issubclass(cls, m.ResponseModel) and name != "MmdsContentsObject"
)
BODY_OPERATIONS = [op for op in OPERATIONS if op.body is not None]
U64 = 2**64 - 1
FORMAT_MAX = {"int32": 2**31 - 1, "int64": 2**63 - 1}


# -- what the specifications say ------------------------------------------------------


@cache
def properties(definition: str) -> dict[str, dict[str, Any]]:
    """Every property ``definition`` has in any version (its newest schema for each)."""
    found: dict[str, dict[str, Any]] = {}
    for minor in reversed(MINORS):
        schema = strict_spec(minor)["definitions"].get(definition, {})
        for name, prop in (schema.get("properties") or {}).items():
            found.setdefault(name, prop)
    return found


@cache
def model_required(definition: str) -> frozenset[str]:
    fields = m.MODELS[definition].model_fields
    return frozenset(f.alias or name for name, f in fields.items() if f.is_required())


@cache
def samples(definition: str, prop: str) -> tuple[Any, ...]:
    """The values the hand-made samples give ``prop`` (realistic paths, MACs, bitmaps...)."""
    seen = []
    for sample in full_samples() + minimal_samples():
        body = sample.to_api() if sample.api_name == definition else {}
        if prop in body and body[prop] not in seen:
            seen.append(body[prop])
    return tuple(seen)


@cache
def cpu_templates() -> tuple[str, ...]:
    return tuple(_features.ENUM_DEFINITIONS["CpuTemplate"])


def _ref(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref") or (schema.get("items") or {}).get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else None


# -- strategies -----------------------------------------------------------------------

WRONG_TYPES: dict[str, list[Any]] = {
    "integer": ["1", 1.5, True, [], {}, b"1"],
    "string": [1, 1.5, True, [], {}, b"text"],
    "boolean": [1, 0, "true", "yes", [], {}],
    "array": ["x", 1, True, {}],
    "object": ["x", 1, True, []],
}


def _kind(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return "string" if _ref(schema) == "CpuTemplate" else "object"
    return str(schema.get("type", "object"))


def _enum(schema: dict[str, Any]) -> tuple[str, ...]:
    if _ref(schema) == "CpuTemplate":
        return cpu_templates()
    return tuple(schema.get("enum", ()))


def _bounds(schema: dict[str, Any]) -> tuple[int, int]:
    low = int(schema.get("minimum", 0))
    high = int(schema.get("maximum", FORMAT_MAX.get(schema.get("format", ""), U64)))
    return low, high


@cache
def good_values(definition: str, prop: str, depth: int) -> st.SearchStrategy[Any]:
    """Values the property should take (the models may be stricter; that is allowed)."""
    schema = properties(definition)[prop]
    kind, enum, known = _kind(schema), _enum(schema), samples(definition, prop)
    options: list[st.SearchStrategy[Any]] = []
    if known:
        options.append(st.sampled_from(known))
    if enum:
        options.append(st.sampled_from(enum))
    elif kind == "integer":
        low, high = _bounds(schema)
        options += [st.integers(low, min(high, low + 4096)), st.sampled_from([low, high])]
    elif kind == "string":
        options.append(st.text(alphabet="abcXYZ019_-./", min_size=0, max_size=12))
    elif kind == "boolean":
        options.append(st.booleans())
    elif kind == "array":
        ref = _ref(schema)
        if ref is not None and depth < 2:
            options.append(st.lists(bodies(ref, depth + 1), max_size=2))
        elif not known:
            options.append(st.lists(st.text(alphabet="abc019_", max_size=6), max_size=3))
    elif kind == "object":
        ref = _ref(schema)
        if ref is not None and depth < 2:
            options.append(bodies(ref, depth + 1))
    if not options:
        options.append(st.just({}) if kind == "object" else st.just([]))
    return st.one_of(options)


@cache
def bad_values(definition: str, prop: str) -> st.SearchStrategy[Any]:
    """Values the property must not take: wrong types, out of range, wrong enum strings."""
    schema = properties(definition)[prop]
    kind, enum = _kind(schema), _enum(schema)
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(WRONG_TYPES[kind])]
    if kind == "integer":
        low, high = _bounds(schema)
        options += [
            st.integers(max_value=low - 1),
            st.integers(min_value=high + 1, max_value=high + 2**70),
        ]
    if enum:
        unknown = st.text(min_size=0, max_size=10).filter(lambda text: text not in enum)
        wrong_case = st.sampled_from(
            [v.swapcase() for v in enum if v.swapcase() != v]
            + [v.lower() for v in enum if v.lower() != v]
        )
        options += [unknown, wrong_case]
    return st.one_of(options)


EXTRA_KEYS = st.text(alphabet="abcdefghij_", min_size=1, max_size=10)


@cache
def bodies(definition: str, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies of ``definition``: mostly good values, some bad ones, keys dropped or added."""

    @st.composite
    def draw_body(draw: st.DrawFn) -> dict[str, Any]:
        props, required = properties(definition), model_required(definition)
        body: dict[str, Any] = {}
        for prop in props:
            if prop not in required and not draw(st.booleans()):
                continue
            if draw(st.integers(0, 11)) == 0:
                body[prop] = draw(bad_values(definition, prop))
            else:
                body[prop] = draw(good_values(definition, prop, depth))
        change = draw(st.sampled_from(["none"] * 6 + ["drop", "extra"]))
        if change == "drop" and body:
            del body[draw(st.sampled_from(sorted(body)))]
        elif change == "extra":
            key = draw(EXTRA_KEYS.filter(lambda k: k not in props))
            body[key] = draw(st.sampled_from([1, "x", True, None, [], {}]))
        return body

    return draw_body()


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8), st.floats()
)
NOT_JSON = st.sampled_from([float("nan"), float("inf"), {1, 2}, b"bytes", object(), 1j])
MMDS_DATA = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.one_of(JSON_LEAVES, NOT_JSON),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ),
    max_size=4,
) | st.dictionaries(st.integers(0, 3), st.just(1), min_size=1, max_size=2)


# -- what must hold -----------------------------------------------------------------------


def names_the_field(exc: FirecError, keys: Any) -> None:
    """``exc`` names the field at fault: one of ``keys`` (the body's, and the fields it
    should have had), or one nested in them."""
    message = str(exc)
    if isinstance(exc, ValidationError):
        assert exc.field, f"no field named: {exc!r}"
        assert exc.field in message, message
        if exc.field != "body":
            head = re.split(r"[.\[]", exc.field, maxsplit=1)[0]
            assert head in keys or head in {"data", "update"}, (exc.field, sorted(keys))
        return
    assert isinstance(exc, UnsupportedError), repr(exc)
    assert exc.connected and exc.connected in message, message
    assert exc.feature and exc.feature in message, message


def _version(minor: str) -> Version:
    return Version.parse(_features.SPEC_VERSIONS[minor])


@pytest.mark.parametrize("definition", REQUEST_MODELS)
@SWEEP
@given(data=st.data())
def test_models_refuse_bad_input_naming_the_field_and_make_bodies_the_spec_takes(
    definition: str, data: st.DataObject
) -> None:
    body = data.draw(bodies(definition), label="body")
    minor = data.draw(st.sampled_from(MINORS), label="version")
    try:
        model = m.MODELS[definition].model_validate(body)
    except FirecError as exc:
        names_the_field(exc, {*body, *properties(definition)})
        return
    produced = model.to_api()
    try:
        check_body(definition, produced, _version(minor))
    except FirecError as exc:  # this version lacks something in it: refused, named
        names_the_field(exc, produced)
        return
    assert schema_errors(definition, produced, minor) == [], (minor, produced)


# -- the clients --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asleep_pid() -> Iterator[int]:
    """A process that only sleeps: the VMM thread of the mock (no waiting on 1.0-1.2.0)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield process.pid
    process.kill()
    process.wait()


SHORTCUTS = {"create_action": ("action_type", m.ActionType), "patch_vm": ("state", m.VmState)}


def _shortcut_values(enum: type[m.ActionType] | type[m.VmState]) -> st.SearchStrategy[Any]:
    values = [e.value for e in enum]
    return st.one_of(
        st.sampled_from(values + list(enum)),
        st.sampled_from([v.lower() for v in values] + [v.upper() for v in values]),
        st.text(max_size=12),
        st.sampled_from([None, 1, 2.5, b"Paused", [], {}]),
    )


def _oversize(body: dict[str, Any], definition: str) -> tuple[dict[str, Any], str] | None:
    """``body`` with one string property made too long to send, and its name."""
    strings = [k for k, v in body.items() if isinstance(v, str)]
    if definition == "MmdsContentsObject":
        strings = ["padding"]
    if not strings:
        return None
    key = strings[0]
    return {**body, key: "x" * (DEFAULT_MAX_PAYLOAD_SIZE + 1)}, key


@pytest.mark.parametrize("op", BODY_OPERATIONS, ids=lambda op: op.client_method)
@SWEEP
@given(data=st.data())
def test_client_methods_refuse_bad_input_naming_the_field_and_send_what_the_spec_takes(
    op: Operation, data: st.DataObject, asleep_pid: int
) -> None:
    assert op.body is not None
    minor = data.draw(st.sampled_from(MINORS), label="version")
    version = _features.SPEC_VERSIONS[minor]
    recorder = Recorder(version)
    client = firec.Client("/x.sock", version=version, transport=httpx.MockTransport(recorder))
    client.vmm_pid = asleep_pid
    forms = ["dict", "model"] + (["shortcut"] if op.client_method in SHORTCUTS else [])
    if op.client_method == "patch_machine_config":
        forms.append("partial")
    form = data.draw(st.sampled_from(forms), label="form")
    oversized: str | None = None
    argument: Any
    if form == "shortcut":
        argument = data.draw(_shortcut_values(SHORTCUTS[op.client_method][1]), label="value")
        keys: Any = {SHORTCUTS[op.client_method][0]}
    else:
        if op.body == "MmdsContentsObject":
            body: dict[Any, Any] = data.draw(MMDS_DATA, label="body")
        else:
            body = data.draw(bodies(op.body), label="body")
        if form == "partial" and body:
            body = {k: v for k, v in body.items() if data.draw(st.booleans(), label=f"keep {k}")}
        if data.draw(st.integers(0, 7), label="oversize") == 0:
            made = _oversize(body, op.body)
            if made is not None:
                body, oversized = made
        keys = {*body, *properties(op.body)}
        argument = body
        if form == "model" and op.body != "MmdsContentsObject":
            try:
                argument = m.MODELS[op.body].model_validate(body)
            except FirecError:
                argument = body  # cannot be a model: the dict form it is
    try:
        getattr(client, op.client_method)(argument)
    except FirecError as exc:
        names_the_field(exc, keys)
        if oversized is not None and isinstance(exc, ValidationError) and exc.field == "body":
            assert oversized in str(exc), str(exc)
        assert recorder.requests == [], [f"{r.method} {r.url.path}" for r in recorder.requests]
        return
    finally:
        client.close()
    assert oversized is None, f"a body with {oversized} over the payload limit was sent"
    assert len(recorder.requests) == 1
    sent = json.loads(recorder.requests[0].content)
    exists, definition = operation_body(minor, op.method, op.path)
    assert exists and definition is not None, (minor, op)
    if definition == "MmdsContentsObject":
        assert sent == json.loads(json.dumps(argument if form != "model" else body))
        return
    partial = op.method == "PATCH"
    assert schema_errors(definition, sent, minor, partial=partial) == [], (minor, sent)
