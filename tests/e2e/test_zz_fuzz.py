"""Every service's OpenAPI, fuzzed against the real processes: whatever the input, no 500 (and 502-504
only as a device's typed answer), and every refusal is a problem+json with a stable code (issue 14).

Two passes per service, with a real user's token on user routes and the administrator's on staff routes:
- schemathesis generates requests from the schema (a few examples per operation, to stay lean);
- a boundary sweep sends what generic fuzzing rarely hits: integers past 64 bits, dates at year 1 and
  9999 with a +-14:00 offset (also inside an opaque cursor), NUL and other control characters, in every
  query and path parameter and every top-level field of a JSON body.

The file runs last in the e2e suite (its name sorts last): the administrator's calls change state freely."""

import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from mesh import Mesh, new_user
from schemathesis.core.result import Ok

from kit.auth import STAFF_PATH_PREFIXES
from kit.httpclient import async_client

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("PB_FUZZ_EXAMPLES", "20"))
SERVICES = ["user", "device", "billing", "asset", "notify", "analytics"]
# Calls that would end the fuzzing principal's own session; sent with a bad token instead.
SELF_ENDING = {("POST", "/v1/sessions/logout"), ("DELETE", "/v1/users/me"), ("POST", "/v1/admin/sessions/logout")}

# 502/503/504 are answers by design where a device is behind the request (a borrow from an offline
# cabinet is 503 cabinet_offline, an unanswered eject 504): allowed as typed problems, never a 500.
GATEWAY_ANSWERS = {502, 503, 504}

_EDGE_MOMENTS = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+00:00",
]
_EDGE_CURSORS = [base64.urlsafe_b64encode(f"{m}|{uuid.uuid4()}".encode()).decode().rstrip("=") for m in _EDGE_MOMENTS]
_EDGE_TEXT = ["\x00", "a\x00b", "\x01\x1f\x7f", "\ud800", "9" * 40]
_EDGE_INTS = [2**63, 2**64 + 1, -(2**63) - 1, 10**40]


def _urlsafe(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _edges(schema: dict[str, Any]) -> list[Any]:
    kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", []) if isinstance(s, dict)}
    formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", []) if isinstance(s, dict)}
    values: list[Any] = []
    if kinds & {"integer", "number"}:
        values += _EDGE_INTS
    if "string" in kinds or not kinds - {None}:
        values += _EDGE_TEXT + _EDGE_CURSORS
        if formats & {"date-time", "date"}:
            values += [*_EDGE_MOMENTS, "0001-01-01", "9999-12-31"]
    return values


@pytest.fixture(scope="module")
async def principals(mesh: Mesh) -> dict[str, str]:
    user = await new_user(mesh, balance_fen=0)
    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    assert user.token
    return {"user": user.token, "admin": admin}


def _base(mesh: Mesh, service: str) -> str:
    url: str = getattr(mesh.urls, service)
    return url


def _headers(method: str, path: str, principals: dict[str, str]) -> dict[str, str]:
    if (method.upper(), path) in SELF_ENDING:
        return {"Authorization": "Bearer not-a-token"}
    token = principals["admin"] if path.startswith(STAFF_PATH_PREFIXES) else principals["user"]
    return {"Authorization": f"Bearer {token}"}


def _check(method: str, path: str, response: httpx.Response | Any, sent: str) -> None:
    status = response.status_code
    if status in GATEWAY_ANSWERS:  # a device's designed answer (the fuzzing may have created the cabinet)
        assert response.json().get("code") not in {"internal_error", "http_error"}, response.text[:500]
        return
    assert status < 500, f"{method} {path} {sent} -> {status}: {response.text[:500]}"
    if status >= 400:
        content_type = response.headers.get("content-type", "")
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/problem+json"), f"{method} {path} {sent}: {response.text[:300]}"
        problem = response.json()
        assert problem["status"] == status and problem["code"], problem
        if problem["code"] == "validation_error":
            assert problem["errors"] and all({"loc", "msg", "type"} <= set(e) for e in problem["errors"]), problem


@pytest.mark.parametrize("service", SERVICES)
def test_generated_requests_never_get_a_5xx(service: str, mesh: Mesh, principals: dict[str, str]) -> None:
    base = _base(mesh, service)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"{service}: an operation its OpenAPI does not describe well: {result.err()}"
        operations.append(result.ok())
    assert operations, f"{service}: no operations in its OpenAPI"
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            response = case.call(base_url=base, headers=_headers(case.method, case.path, principals), timeout=15)
            _check(case.method, case.path, response, "(generated)")

        fuzz()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method.upper(), path, operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _sample(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A plausible value of `schema`, so that a body gets past its other fields' validation."""
    schema = _resolve(document, schema)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return _sample(document, next(s for s in schema["anyOf"] if s.get("type") != "null"))
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _sample(document, props[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(document, schema.get("items", {}))] * max(1, schema.get("minItems", 0))
    if kind in {"integer", "number"}:
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00+00:00"
    return "x" * max(1, schema.get("minLength", 1))


async def _send(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    path_values: dict[str, Any],
    query: dict[str, Any],
    payload: Any,
    what: str,
) -> str | None:
    url = path.format(**{k: quote(str(v), safe="") for k, v in path_values.items()})
    kwargs: dict[str, Any] = {"params": query, "headers": headers}
    if payload is not None:
        kwargs["content"] = json.dumps(payload)
        kwargs["headers"] = {**headers, "Content-Type": "application/json"}
    try:
        _check(method, path, await http.request(method, url, **kwargs), what)
    except AssertionError as failure:
        return str(failure)
    return None


@pytest.mark.parametrize("service", SERVICES)
async def test_boundary_values_never_get_a_5xx(service: str, mesh: Mesh, principals: dict[str, str]) -> None:
    base = _base(mesh, service)
    async with async_client(base_url=base, timeout=15) as http:
        document = (await http.get("/openapi.json")).json()
        sent = 0
        failures: list[str | None] = []
        for method, path, operation in _operations(document):
            headers = _headers(method, path, principals)
            params = [p for p in operation.get("parameters", []) if p["in"] in {"path", "query"}]
            defaults = {p["name"]: _sample(document, p.get("schema", {})) for p in params if p["in"] == "path"}
            content = operation.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema")
            body = _sample(document, body_schema) if body_schema else None
            for param in params:
                for value in _edges(_resolve(document, param.get("schema", {}))):
                    if isinstance(value, str) and not _urlsafe(value):
                        continue  # a lone surrogate has no UTF-8 form to percent-encode
                    what = f"{param['name']}={value!r}"
                    if param["in"] == "path":
                        failures += [
                            await _send(http, method, path, headers, {**defaults, param["name"]: value}, {}, body, what)
                        ]
                    else:
                        failures += [
                            await _send(http, method, path, headers, defaults, {param["name"]: value}, body, what)
                        ]
                    sent += 1
            if isinstance(body, dict):
                props = _resolve(document, body_schema or {}).get("properties", {})
                for name, prop in props.items():
                    for value in _edges(_resolve(document, prop)):
                        changed = {**body, name: value}
                        failures += [
                            await _send(http, method, path, headers, defaults, {}, changed, f"body.{name}={value!r}")
                        ]
                        sent += 1
        assert sent, f"{service}: no parameter or body field to try"
        found = [f for f in failures if f is not None]
        assert not found, f"{len(found)} of {sent} boundary requests failed:\n" + "\n".join(found[:40])
