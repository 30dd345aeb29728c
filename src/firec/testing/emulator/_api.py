"""Firecracker's API server: one HTTP request in, one response out, logged and counted.

:func:`dispatch` answers a request as Firecracker's API server does: it logs
the request, routes it (:mod:`._routes`: method and path to a VMM action, body
parsed), has the action performed (:mod:`._actions`), logs the outcome and
counts it in the metrics. The HTTP transport itself is :mod:`._http`.
"""

from __future__ import annotations

import json

from ._actions import Response, perform
from ._errors import ActionError
from ._routes import METHOD_NAME, RequestError, route
from ._vmm import Vmm

__all__ = ["Response", "dispatch"]

_STATUS_TEXT = {
    200: "200 OK",
    204: "204 No Content",
    400: "400 Bad Request",
    413: "413 Payload too large",
}


def _fault(message: str) -> str:
    return json.dumps({"fault_message": message}, separators=(",", ":"), ensure_ascii=False)


def _rust_debug(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _describe(method: str, uri: str, body: str | None, vmm: Vmm) -> str:
    name = METHOD_NAME[method]
    if body is None or uri == "/mmds":
        return f"{name} request on {_rust_debug(uri)}"
    if uri == "/cpu-config" and not vmm.log.enabled(4):
        return (
            f"{name} request on {_rust_debug(uri)}. To view the CPU template received by the "
            "API, configure log-level to DEBUG"
        )
    return f"{name} request on {_rust_debug(uri)} with body {_rust_debug(body)}"


def dispatch(vmm: Vmm, method: str, uri: str, body: str | None) -> Response:
    """Handle one API request on ``vmm`` (never raises for API-level refusals)."""
    log = vmm.log
    api = {"thread": "fc_api", "module": "firecracker::api_server"}
    log.log(
        "Info",
        f"The API server received a {_describe(method, uri, body, vmm)}.",
        origin="src/firecracker/src/api_server/parsed_request.rs:74",
        force=True,
        **api,
    )
    try:
        action = route(vmm, method, uri, body)
    except RequestError as err:
        log.log(
            "Error",
            err.debug,
            origin="src/firecracker/src/api_server/mod.rs:143",
            force=True,
            **api,
        )
        return Response(400, _fault(err.message))
    _count(vmm, method, uri)
    try:
        response = perform(vmm, action)
    except ActionError as err:
        status_text = _STATUS_TEXT[err.status]
        log.log(
            "Error",
            f"Received Error. Status code: {status_text}. Message: {err.message}",
            origin="src/firecracker/src/api_server/parsed_request.rs:200",
            force=True,
            **api,
        )
        response = Response(err.status, _fault(err.message))
    else:
        log.log(
            "Info",
            f"The request was executed successfully. Status code: {_STATUS_TEXT[response.status]}.",
            origin="src/firecracker/src/api_server/parsed_request.rs:179",
            force=True,
            **api,
        )
    if action.deprecation:
        log.log(
            "Warn",
            action.deprecation,
            origin="src/firecracker/src/api_server/mod.rs:131",
            force=True,
            **api,
        )
        response.deprecated = True
        vmm.metrics.inc("deprecated_api", "deprecated_http_api_calls")
    return response


_COUNTERS = {
    ("GET", ""): ("get_api_requests", "instance_info_count"),
    ("GET", "machine-config"): ("get_api_requests", "machine_cfg_count"),
    ("GET", "mmds"): ("get_api_requests", "mmds_count"),
    ("GET", "version"): ("get_api_requests", "vmm_version_count"),
    ("PUT", "actions"): ("put_api_requests", "actions_count"),
    ("PUT", "boot-source"): ("put_api_requests", "boot_source_count"),
    ("PUT", "drives"): ("put_api_requests", "drive_count"),
    ("PUT", "logger"): ("put_api_requests", "logger_count"),
    ("PUT", "machine-config"): ("put_api_requests", "machine_cfg_count"),
    ("PUT", "metrics"): ("put_api_requests", "metrics_count"),
    ("PUT", "network-interfaces"): ("put_api_requests", "network_count"),
    ("PUT", "mmds"): ("put_api_requests", "mmds_count"),
    ("PUT", "vsock"): ("put_api_requests", "vsock_count"),
    ("PATCH", "drives"): ("patch_api_requests", "drive_count"),
    ("PATCH", "network-interfaces"): ("patch_api_requests", "network_count"),
    ("PATCH", "machine-config"): ("patch_api_requests", "machine_cfg_count"),
    ("PATCH", "mmds"): ("patch_api_requests", "mmds_count"),
}


def _count(vmm: Vmm, method: str, uri: str) -> None:
    key = _COUNTERS.get((method, uri.lstrip("/").split("/")[0]))
    if key:
        vmm.metrics.inc(*key)
