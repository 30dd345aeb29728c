"""Every operation of the newest spec has a client method, on both clients."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

import firec
from firec.api.operations import OPERATIONS, OPERATIONS_BY_ID

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "firecracker-api"
NEWEST = SPECS / "firecracker-v1.16.1.yaml"


def _spec_operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, str | None, str | None]]:
    found = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if method == "parameters":
                continue
            body = next((p for p in op.get("parameters", []) if p.get("in") == "body"), None)
            body_ref = body["schema"]["$ref"].rsplit("/", 1)[-1] if body else None
            ok = op["responses"].get(200, op["responses"].get("200"))
            schema = (ok or {}).get("schema")
            response = None
            if schema is not None:
                response = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else "object"
            found[op["operationId"]] = (method.upper(), path, body_ref, response)
    return found


@pytest.fixture(scope="module")
def newest_spec() -> dict[str, Any]:
    if not NEWEST.exists():
        pytest.skip(f"{NEWEST} is absent: the shared API specs are not beside the checkout")
    spec: dict[str, Any] = yaml.safe_load(NEWEST.read_text())
    return spec


def test_every_spec_operation_has_a_client_method(newest_spec: dict[str, Any]) -> None:
    missing = []
    for operation_id, (method, path, body, response) in _spec_operations(newest_spec).items():
        op = OPERATIONS_BY_ID.get(operation_id)
        if op is None:
            missing.append(f"{operation_id} ({method} {path}) is not in firec.api.operations")
            continue
        assert (op.method, op.path, op.body, op.response) == (method, path, body, response), op
        for client in (firec.Client, firec.AsyncClient):
            func = getattr(client, op.client_method, None)
            if func is None:
                missing.append(f"{client.__name__}.{op.client_method} for {operation_id}")
                continue
            assert inspect.getdoc(func), f"{client.__name__}.{op.client_method} has no docstring"
            assert inspect.iscoroutinefunction(func) == (client is firec.AsyncClient)
    assert not missing, "\n".join(missing)


def test_no_operation_outside_the_spec(newest_spec: dict[str, Any]) -> None:
    known = _spec_operations(newest_spec)
    assert [op.operation_id for op in OPERATIONS if op.operation_id not in known] == []


def test_sync_client_is_generated_from_the_async_one() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
