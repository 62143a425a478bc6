"""No 5xx for bad input: every POST/PUT/PATCH route of the OpenAPI spec, sent malformed bodies as admin.

Routes and their body schemas come from the app's own ``/openapi.json``, so a new route is swept without
editing this file. For each route a minimal valid body is synthesised from its schema; then every field
(top level and one nested level) gets each bad value in turn, and whole-body classes (non-JSON, empty,
array, invalid UTF-8, deep nesting) are sent as raw bytes. Any 5xx, or a body that shows a driver message
or a traceback, is a failure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api_helpers import ApiRig, build_rig

DEPTH = 50
MAX_FIELD_DEPTH = 2
PATH_PARAM_VALUE = "x-missing"
LEAK_MARKERS = ("Traceback", "MilvusException", "sqlalchemy", 'File "/')


def _nested_list(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


# body class → the values one field is set to (each sent on its own)
FIELD_VALUES: dict[str, list[Any]] = {
    "wrong_type": ["abc", 1.5, True, -1, None, [], {"k": ["v", 1]}],
    "int_overflow": [2**63, 10**30, [-(2**63) - 1], {"chunk_index": 2**63}],
    "deep_nesting": [_nested_list(DEPTH), _nested_dict(DEPTH)],
    "nul_byte": ["a\x00b", {"a\x00b": ["c\x00d"]}],
    "invalid_utf8": ["\udc80x\ud800", ["\udc80"]],  # lone surrogates: valid JSON escapes, not encodable as UTF-8
}
RAW_INVALID_UTF8 = b"\xff\xfe\xc3\x28"


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _variants(schema: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, spec)
    options = schema.get("anyOf") or schema.get("oneOf")
    if not options:
        return [schema]
    resolved = [_resolve(o, spec) for o in options]
    return [o for o in resolved if o.get("type") != "null"] or resolved


def sample(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """A minimal value ``schema`` accepts: required properties only, the smallest allowed sizes."""
    schema = _variants(schema, spec)[0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object")
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(schema.get("items", {}), spec) for _ in range(int(schema.get("minItems", 0)))]
    props = schema.get("properties", {})
    return {name: sample(props[name], spec) for name in schema.get("required", []) if name in props}


def base_bodies(schema: dict[str, Any], spec: dict[str, Any]) -> list[Any]:
    """Candidate valid bodies: the schema's own examples (free-form bodies only have those), then a synthesised one
    (with a model id the test app serves, for routes that require one)."""
    resolved = _resolve(schema, spec)
    synthesised = sample(schema, spec)
    if not isinstance(synthesised, dict):
        return [*resolved.get("examples", []), synthesised]
    hinted = {**synthesised, **{k: v for k, v in FIELD_HINTS.items() if k in synthesised}}
    return [*resolved.get("examples", []), hinted, synthesised]


FIELD_HINTS = {"model": "rag"}  # required fields whose valid values the schema cannot tell


def schema_paths(schema: dict[str, Any], spec: dict[str, Any], prefix: tuple[str, ...] = ()
                 ) -> Iterator[tuple[str, ...]]:
    """Every property path down to ``MAX_FIELD_DEPTH`` levels (nested objects included)."""
    for variant in _variants(schema, spec):
        for name, sub in variant.get("properties", {}).items():
            path = (*prefix, name)
            yield path
            if len(path) < MAX_FIELD_DEPTH:
                yield from schema_paths(sub, spec, path)


def body_paths(body: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of ``body`` down to ``MAX_FIELD_DEPTH`` levels (free-form bodies have no properties)."""
    if isinstance(body, dict):
        for name, sub in body.items():
            path = (*prefix, name)
            yield path
            if len(path) < MAX_FIELD_DEPTH:
                yield from body_paths(sub, path)


def with_value(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    node = out
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
    return out


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    schema: dict[str, Any] | None

    @property
    def url(self) -> str:
        parts = [PATH_PARAM_VALUE if p.startswith("{") and p.endswith("}") else p for p in self.path.split("/")]
        return "/".join(parts)


def body_routes(spec: dict[str, Any]) -> list[Route]:
    routes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch"):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            routes.append(Route(method.upper(), path, schema))
    return routes


@dataclass
class Sweep:
    client: TestClient
    headers: dict[str, str]
    requests: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def send(self, route: Route, body_class: str, content: bytes, what: str) -> None:
        headers = {**self.headers, "Content-Type": "application/json"}
        response = self.client.request(route.method, route.url, content=content, headers=headers)
        self.requests[body_class] += 1
        leaked = [m for m in LEAK_MARKERS if m in response.text]
        if response.status_code >= 500 or leaked:
            self.server_errors[body_class] += response.status_code >= 500
            self.failures.append(f"{route.method} {route.path} [{body_class}] {what} → {response.status_code} "
                                 f"{response.text[:300]}")

    def json(self, route: Route, body_class: str, body: Any, what: str) -> None:
        self.send(route, body_class, json.dumps(body).encode("utf-8", "surrogatepass"), what)


def pick_base(sweep: Sweep, route: Route, spec: dict[str, Any]) -> Any:
    """The first candidate body the route accepts (so mutations reach the library), else the synthesised one."""
    candidates = base_bodies(route.schema, spec) if route.schema else [{}]
    for body in candidates:
        response = sweep.client.request(route.method, route.url, json=body, headers=sweep.headers)
        if response.status_code < 400:
            return body
    return candidates[-1]


def sweep_route(sweep: Sweep, route: Route, spec: dict[str, Any]) -> None:
    base = pick_base(sweep, route, spec)
    for body_class, raw in (("non_json", b"{not json"), ("empty", b""), ("invalid_utf8", RAW_INVALID_UTF8),
                            ("invalid_utf8", b'{"query": "\xff\xfe"}')):
        sweep.send(route, body_class, raw, repr(raw))
    sweep.json(route, "json_array", [base], "[base]")
    sweep.json(route, "json_array", [], "[]")
    sweep.json(route, "deep_nesting", _nested_dict(DEPTH), "whole body nested")
    sweep.json(route, "deep_nesting", _nested_list(DEPTH), "whole body nested list")
    sweep.json(route, "wrong_type", base, "minimal valid body")
    if not isinstance(base, dict) or route.schema is None:
        return
    paths = dict.fromkeys([*schema_paths(route.schema, spec), *body_paths(base)])
    for path in paths:
        for body_class, values in FIELD_VALUES.items():
            for value in values:
                body = with_value(base, path, value)
                sweep.json(route, body_class, body, f"{'.'.join(path)}={json.dumps(value)[:60]}")


@pytest.fixture
def rig(make_settings: Any, fake_store: Any) -> ApiRig:
    return build_rig(make_settings(), fake_store)


@pytest.mark.slow  # ~2,700 requests: 100 s on the shared 2-core box (/query's searches, /admin/users' hashing)
def test_no_5xx_for_malformed_bodies_on_any_route(rig: ApiRig) -> None:
    spec = rig.client.get("/openapi.json").json()
    routes = body_routes(spec)
    assert len(routes) >= 20, [r.path for r in routes]
    sweep = Sweep(TestClient(rig.client.app, raise_server_exceptions=False), rig.auth("admin"))
    for route in routes:
        sweep_route(sweep, route, spec)
    print(f"\nmalformed-body sweep: routes={len(routes)} requests={sum(sweep.requests.values())} "
          f"by class={dict(sweep.requests)} 5xx={sum(sweep.server_errors.values())} "
          f"by class={dict(sweep.server_errors)}")
    assert not sweep.failures, f"{len(sweep.failures)} failures:\n" + "\n".join(sweep.failures[:40])
