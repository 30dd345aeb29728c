"""Every public client method, called every way it accepts, against every Firecracker version.

No VMM here: a mock transport plays a given version and records what is sent.
Each PATCH operation is tried with every field its body allows, on every
version with a specification, and both clients; the spec's JSON schema says
whether the version takes the body (then it must be sent as is) or not (then
:class:`~firec.errors.UnsupportedError` must come before anything is sent).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import firec
from firec.api import models
from firec.api.operations import OPERATIONS, Operation
from firec.api.versions import KNOWN_VERSIONS, Version
from firec.errors import UnsupportedError
from model_samples import full_samples
from spec_schema import NO_SPECS, SPEC_FILES, operation_body, schema_errors
from tests.support import Recorder


def call(flavour: str, recorder: Recorder, method: str, *args: Any, check: bool = True) -> None:
    """``method(*args)`` on a fresh Client or AsyncClient whose transport is ``recorder``.

    ``check=False`` turns the client's version checks off.
    """
    if flavour == "sync":
        transport = httpx.MockTransport(recorder)
        with firec.Client("/x.sock", transport=transport, check_version=check) as client:
            getattr(client, method)(*args)
        return

    async def handler(request: httpx.Request) -> httpx.Response:
        return recorder(request)

    async def run() -> None:
        transport = httpx.MockTransport(handler)
        async with firec.AsyncClient("/x.sock", transport=transport, check_version=check) as client:
            await getattr(client, method)(*args)

    asyncio.run(run())


def _sample(definition: str) -> dict[str, Any]:
    body = next(s for s in full_samples() if s.api_name == definition).to_api()
    return body


def _required(definition: str) -> list[str]:
    model = models.MODELS[definition]
    return [f.alias or name for name, f in model.model_fields.items() if f.is_required()]


def _patch_cases() -> list[tuple[Operation, str | None]]:
    cases: list[tuple[Operation, str | None]] = []
    for op in OPERATIONS:
        if op.method != "PATCH":
            continue
        if op.body is None or op.body == "MmdsContentsObject":
            cases.append((op, None))
            continue
        cases += [(op, field) for field in _sample(op.body)]
    return cases


def _patch_body(op: Operation, field: str | None) -> dict[str, Any] | None:
    if op.body is None:
        return None
    if op.body == "MmdsContentsObject":
        return {"latest": {"meta-data": {"zone": "z1"}}}
    sample = _sample(op.body)
    assert field is not None
    if op.client_method == "patch_machine_config":
        return {field: sample[field]}  # a partial update: just this field
    return {name: sample[name] for name in _required(op.body)} | {field: sample[field]}


def _patch_argument(op: Operation, body: dict[str, Any] | None) -> tuple[Any, ...]:
    if body is None:
        return ()
    if op.body in (None, "MmdsContentsObject") or op.client_method == "patch_machine_config":
        return (body,)
    return (models.MODELS[op.body].model_validate(body),)


def _spec_takes(op: Operation, body: Any, version: Version) -> bool:
    exists, definition = operation_body(version.minor_key, op.method, op.path)
    if not exists:
        return False
    if body is None or definition is None:
        return body is None
    return not schema_errors(definition, body, version.minor_key, partial=True)


@pytest.mark.skipif(not SPEC_FILES, reason=NO_SPECS)
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    ("op", "field"),
    _patch_cases(),
    ids=lambda v: v.operation_id if isinstance(v, Operation) else str(v),
)
def test_every_patch_field_on_every_version(op: Operation, field: str | None, flavour: str) -> None:
    """Sent as given where the version takes it; else UnsupportedError before sending."""
    body = _patch_body(op, field)
    args = _patch_argument(op, body)
    for version in KNOWN_VERSIONS:
        recorder = Recorder(str(version))
        if _spec_takes(op, body, version):
            call(flavour, recorder, op.client_method, *args)
            path = op.url(drive_id="rootfs", iface_id="eth0", id="pmem0")
            assert recorder.sent()[-1] == f"PATCH {path}", (version, recorder.sent())
            assert recorder.bodies()[-1] == body, version
        else:
            with pytest.raises(UnsupportedError) as caught:
                call(flavour, recorder, op.client_method, *args)
            assert str(version) in str(caught.value)
            assert all(not line.startswith("PATCH") for line in recorder.sent()), version


def test_patch_machine_config_on_1_0_refuses_huge_pages_as_unsupported() -> None:
    """The case of the issue: an UnsupportedError naming the field, not a TypeError."""
    recorder = Recorder("1.0.0")
    with pytest.raises(UnsupportedError) as caught:
        call("sync", recorder, "patch_machine_config", {"huge_pages": "None"})
    assert "huge_pages" in caught.value.feature
    assert caught.value.introduced == "1.7"
    assert recorder.sent() == ["GET /version"]


# -- every form of every method ------------------------------------------------------


def _body_operations() -> list[Operation]:
    return [op for op in OPERATIONS if op.body is not None]


@pytest.mark.parametrize("op", _body_operations(), ids=lambda op: op.client_method)
def test_a_mapping_is_taken_like_the_model(op: Operation) -> None:
    """Every method with a body takes a mapping of the model's fields, sent like the model."""
    assert op.body is not None
    model = models.MODELS[op.body]
    for sample in [s for s in full_samples() if s.api_name == op.body][:1]:
        as_model, as_mapping = Recorder("1.16.1"), Recorder("1.16.1")
        call("sync", as_model, op.client_method, sample, check=False)
        call("sync", as_mapping, op.client_method, sample.to_api(), check=False)
        assert as_mapping.sent() == as_model.sent()
        assert as_mapping.bodies() == as_model.bodies()
        assert model.model_validate(as_mapping.bodies()[-1]) == sample


SHORTCUTS = [
    ("create_action", "Reboot", "action_type"),
    ("create_action", "instancestart", "action_type"),
    ("create_action", "INSTANCESTART", "action_type"),
    ("create_action", 7, "action_type"),
    ("create_action", None, "action_type"),
    ("patch_vm", "Stopped", "state"),
    ("patch_vm", "paused", "state"),
    ("patch_vm", b"Paused", "state"),
]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(("method", "value", "field"), SHORTCUTS)
def test_a_bad_shortcut_is_a_validation_error_naming_the_field(
    method: str, value: Any, field: str, flavour: str
) -> None:
    recorder = Recorder("1.14.2")
    with pytest.raises(firec.errors.ValidationError) as caught:
        call(flavour, recorder, method, value)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: must be ")
    assert recorder.sent() == []


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_good_shortcuts_still_work(flavour: str) -> None:
    recorder = Recorder("1.14.2")
    call(flavour, recorder, "create_action", "InstanceStart")
    call(flavour, recorder, "create_action", models.ActionType.FLUSH_METRICS)
    call(flavour, recorder, "create_action", {"action_type": "SendCtrlAltDel"})
    call(flavour, recorder, "patch_vm", "Paused")
    call(flavour, recorder, "patch_vm", {"state": "Resumed"})
    assert [body for body in recorder.bodies() if body is not None] == [
        {"action_type": "InstanceStart"},
        {"action_type": "FlushMetrics"},
        {"action_type": "SendCtrlAltDel"},
        {"state": "Paused"},
        {"state": "Resumed"},
    ]


NOT_A_BODY = [42, "text", ["a", "list"], 1.5, object(), models.Vm(state="Paused")]


@pytest.mark.parametrize("value", NOT_A_BODY, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("op", _body_operations(), ids=lambda op: op.client_method)
def test_a_value_that_is_no_body_is_a_validation_error(op: Operation, value: Any) -> None:
    """Neither the model nor a mapping: refused naming the argument (or the shortcut's field)."""
    assert op.body is not None
    if op.body == "Vm" and isinstance(value, models.Vm):
        return  # the right model
    recorder = Recorder("1.16.1")
    with pytest.raises(firec.errors.ValidationError) as caught:
        call("sync", recorder, op.client_method, value)
    assert caught.value.field
    assert caught.value.field in str(caught.value)
    assert all(line == "GET /version" for line in recorder.sent())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"a": float("nan")}, "data.a"),
        ({"a": [1, float("inf")]}, "data.a[1]"),
        ({"a": {1: "x"}}, "data.a[1]"),
        ({"a": {"b": object()}}, "data.a.b"),
        ({"a": {1, 2}}, "data.a"),
        (["not", "an", "object"], "data"),
        ("text", "data"),
    ],
)
@pytest.mark.parametrize("method", ["put_mmds", "patch_mmds"])
def test_mmds_data_that_is_not_json_is_refused_naming_where(
    method: str, data: Any, field: str
) -> None:
    recorder = Recorder("1.14.2")
    with pytest.raises(firec.errors.ValidationError) as caught:
        call("sync", recorder, method, data)
    assert caught.value.field == field
    assert recorder.sent() == []


def test_deep_or_circular_mmds_data_is_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(1000):
        node["x"] = {}
        node = node["x"]
    circular: dict[str, Any] = {}
    circular["self"] = circular
    for data in (deep, circular):
        with pytest.raises(firec.errors.ValidationError) as caught:
            call("sync", Recorder("1.14.2"), "put_mmds", data)
        assert "deeper than" in caught.value.reason


@pytest.mark.parametrize("timeout", ["5", -1, float("nan"), True, [1]])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    recorder = Recorder("1.14.2")
    with firec.Client("/x.sock", transport=httpx.MockTransport(recorder)) as client:
        with pytest.raises(firec.errors.ValidationError) as caught:
            client.get_instance_info(timeout=timeout)
        assert caught.value.field == "timeout"
    with pytest.raises(firec.errors.ValidationError) as made:
        firec.Client("/x.sock", timeout=timeout)
    assert made.value.field == "timeout"
    assert recorder.sent() == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"socket_path": 3}, "socket_path"),
        ({"socket_path": ""}, "socket_path"),
        ({"socket_path": "/x.sock", "version": 1.0}, "version"),
        ({"socket_path": "/x.sock", "version": "one"}, "version"),
        ({"socket_path": "/x.sock", "slow_timeout": "long"}, "slow_timeout"),
        ({"socket_path": "/x.sock", "transport": "unix"}, "transport"),
    ],
)
@pytest.mark.parametrize("cls", [firec.Client, firec.AsyncClient])
def test_bad_client_arguments_are_refused(cls: Any, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(firec.errors.ValidationError) as caught:
        cls(**kwargs)
    assert caught.value.field == field


# -- the API's payload limit ------------------------------------------------------------


def _mmds_of_size(size: int) -> dict[str, str]:
    """MMDS data whose compact JSON body is exactly ``size`` bytes."""
    return {"k": "x" * (size - len('{"k":""}'))}


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_body_over_the_payload_limit_is_refused_before_sending(flavour: str) -> None:
    """Firecracker takes 51,200 bytes unless told otherwise: larger is refused, saying why."""
    recorder = Recorder("1.14.2")
    call(flavour, recorder, "put_mmds", _mmds_of_size(51200))
    assert len(recorder.requests[-1].content) == 51200
    sent = len(recorder.requests)
    with pytest.raises(firec.errors.ValidationError) as caught:
        call(flavour, recorder, "put_mmds", _mmds_of_size(51201))
    message = str(caught.value)
    assert "51201 bytes" in message
    assert "51200 bytes" in message
    assert "--http-api-max-payload-size" in message
    assert caught.value.field == "body"
    assert [r for r in recorder.requests[sent:] if r.method == "PUT"] == []


def test_the_client_takes_the_limit_it_is_given() -> None:
    recorder = Recorder("1.14.2")
    transport = httpx.MockTransport(recorder)
    with firec.Client("/x.sock", transport=transport, max_payload_size=1000) as client:
        client.put_mmds(_mmds_of_size(1000))
        with pytest.raises(firec.errors.ValidationError) as caught:
            client.put_mmds(_mmds_of_size(1001))
        assert "1001 bytes" in str(caught.value) and "1000 bytes" in str(caught.value)
    with firec.Client("/x.sock", transport=transport, max_payload_size=None) as client:
        client.put_mmds(_mmds_of_size(200_000))  # no limit: sent
    assert len(recorder.requests[-1].content) == 200_000
    for bad in (0, -5, "1000", 1.5, True):
        with pytest.raises(firec.errors.ValidationError) as refused:
            firec.Client("/x.sock", max_payload_size=bad)
        assert refused.value.field == "max_payload_size"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_closed_client_says_so_with_a_firec_error(flavour: str) -> None:
    recorder = Recorder("1.14.2")
    if flavour == "sync":
        client = firec.Client("/x.sock", transport=httpx.MockTransport(recorder))
        client.close()
        with pytest.raises(firec.errors.ConnectError, match="closed: make a new client"):
            client.get_instance_info()
        return

    async def run() -> None:
        aclient = firec.AsyncClient("/x.sock", transport=httpx.MockTransport(recorder))
        await aclient.aclose()
        with pytest.raises(firec.errors.ConnectError, match="closed: make a new client"):
            await aclient.get_instance_info()

    asyncio.run(run())
