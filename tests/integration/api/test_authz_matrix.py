"""The authorization matrix of /api/v1: every operation of the OpenAPI document × every kind of caller, through
the real uvicorn server.

Callers: no key, a revoked key, a key lacking the operation's scope, agent A's key (on A's own objects), agent
B's key on A's objects, B's admin key on A's objects, and A's admin key. Expected: 401, 401, 403, success,
404 (or 403 for admin-only operations; B's own lists for collections), 404 (admin scope gives no view of
another agent's objects), success. Nothing B sees may mention A's objects, and nothing is ever a 5xx.

Data-driven: the operations are read from the API's OpenAPI document (the same code the live server serves;
a test checks the live document has the same operations), so operations added later are covered without
editing this file. An operation whose path this file does not know (its scope or the object behind its
`{id}`) fails loudly: add it to SCOPES / RESOURCES below.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import httpx
import pytest

from agentops.keys import actions as key_actions
from agentops.keys.models import ApiKey
from budgets.actions.prices import set_price
from budgets.models import Budget
from tests.fixtures.factories import make_budget, seed_prices
from tests.fixtures.people import AGENT_A as CAST_A
from tests.fixtures.people import AGENT_B as CAST_B
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/v1"
AGENT_A, AGENT_B = CAST_A.name, CAST_B.name  # the cast's two agents (registered agent functions)
MARK = "authz-secret-of-a"  # put into A's objects; must never appear in what B gets back

# The scope each path needs (first matching prefix wins; admin paths before the rest).
SCOPES = [
    ("/admin/", "admin"),
    ("/runs", "runs"),
    ("/actions", "actions"),
    ("/usage", "usage"),
    ("/reservations", "usage"),
    ("/budgets", "budgets:read"),
]
# The object behind the first path parameter, by path prefix. "owned" objects belong to an agent.
RESOURCES = [
    ("/runs/{", "run", True),
    ("/actions/{", "action", True),
    ("/reservations/{", "reservation", True),
    ("/admin/budgets/{", "budget", False),
    ("/admin/prices/{", "price", False),
]
# Known-good bodies (schema-valid and meaningful); other operations get a minimal body built from the schema.
BODIES = {
    ("POST", "/runs"): {"input": {"topic": MARK}, "session_id": MARK},
    ("POST", "/actions"): {"session_id": MARK, "operation": "authz_probe", "arguments": {"note": MARK}},
    ("POST", "/usage"): {
        "session_id": MARK,
        "model": "gpt-4o-mini",
        "operation": "authz",
        "input_tokens": 10,
        "output_tokens": 5,
    },
    ("POST", "/reservations"): {
        "session_id": MARK,
        "model": "gpt-4o-mini",
        "operation": "authz",
        "estimated_input_tokens": 10,
        "estimated_output_tokens": 5,
    },
    ("POST", "/reservations/{id}/settle"): {"input_tokens": 8, "output_tokens": 4},
    # admin: "{n}" becomes a number unique to the request (names are unique)
    ("POST", "/admin/budgets"): {
        "name": "authz-new-{n}",
        "scope": "agent",
        "scope_key": "authz-nobody",
        "limit_tokens": 1000,
    },
    ("PUT", "/admin/budgets/{id}"): {"limit_tokens": 2000, "soft_threshold_pct": 70},
    ("POST", "/admin/prices"): {"model": "authz-price-{n}", "input_per_1k": "0.001", "output_per_1k": "0.002"},
}


def _document() -> dict:
    from agentops.urls import api

    return api.get_openapi_schema(path_prefix=BASE)


def _operations() -> list[tuple[str, str, dict]]:
    try:
        document = _document()
    except Exception as exc:  # a router that does not import: collect one failing test that says so
        return [("ERROR", repr(exc)[:300], {})]
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


OPERATIONS = _operations()


def scope_of(path: str) -> str:
    local = path.removeprefix(BASE)
    for prefix, scope in SCOPES:
        if local.startswith(prefix):
            return scope
    raise AssertionError(f"{path}: unknown scope — add its prefix to SCOPES in {__file__}")


def resource_of(path: str) -> tuple[str, bool] | None:
    if "{" not in path:
        return None
    local = path.removeprefix(BASE)
    for prefix, name, owned in RESOURCES:
        if local.startswith(prefix):
            return name, owned
    raise AssertionError(f"{path}: unknown object behind the path parameter — add it to RESOURCES in {__file__}")


# --- minimal schema-valid values ----------------------------------------------------------------------


def resolve(schema: dict, document: dict) -> dict:
    while "$ref" in schema:
        node = document
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def example(schema: dict, document: dict, depth: int = 0):
    schema = resolve(schema, document)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if resolve(s, document).get("type") != "null"] or schema[key]
            return example(options[0], document, depth + 1)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(resolve(part, document))
        return example(merged, document, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required", ()))
        return {
            name: example(prop, document, depth + 1)
            for name, prop in schema.get("properties", {}).items()
            if name in required and depth < 6
        }
    if kind == "array":
        return [example(schema.get("items", {}), document, depth + 1) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        if schema.get("format") == "date-time":
            return dt.datetime.now(dt.UTC).isoformat()
        if schema.get("format") == "decimal" or schema.get("format") == "number":
            return "1.0"
        return "authz"[: schema.get("maxLength", 5)].ljust(schema.get("minLength", 0), "x")
    if kind in {"integer", "number"}:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if kind == "integer" else 0.5))
        value = max(low, 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return {}


# --- the stage: keys, A's objects, the requests -------------------------------------------------------


class Stage:
    def __init__(self, url: str):
        self.url = url
        self.document = httpx.get(url + BASE + "/openapi.json").json()
        agent_scopes = list(ApiKey.AGENT_SCOPES)
        self.keys: dict[str, str | None] = {
            "none": None,
            "A": CAST_A.key(agent_scopes, name="authz A"),
            "A-admin": CAST_A.key(["admin"], name="authz A admin"),
            "B": CAST_B.key(agent_scopes, name="authz B"),
            "B-admin": CAST_B.key(["admin"], name="authz B admin"),
        }
        row, revoked = key_actions.create_api_key(AGENT_A, scopes=["admin"], name="authz revoked")
        key_actions.revoke_api_key(row.pk)
        self.keys["revoked"] = revoked
        self.lacking: dict[str, str] = {}
        self.a_ids: dict[str, set] = {}
        self.sequence = 0

    def key_lacking(self, scope: str) -> str:
        if scope not in self.lacking:
            others = [s for s in ApiKey.AGENT_SCOPES if s != scope]
            self.lacking[scope] = CAST_A.key(others, name=f"authz no {scope}")
        return self.lacking[scope]

    def call(self, method: str, path: str, key: str | None, body=None, params=None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(
            method, self.url + path, headers=headers, json=body, params=params, timeout=30, follow_redirects=False
        )

    def create(self, resource: str) -> int:
        """A fresh object of agent A (through the API for A's own objects)."""
        if resource == "budget":
            name = f"authz-extra-{len(self.a_ids.get('budget', ()))}"
            budget = make_budget(name, scope="agent", scope_key=AGENT_A, limit_tokens=10**9)
            ident = budget.pk
        elif resource == "price":
            ident = set_price(f"authz-model-{len(self.a_ids.get('price', ()))}", Decimal("0.001"), Decimal("0.002")).pk
        else:
            path = {"run": "/runs", "action": "/actions", "reservation": "/reservations"}[resource]
            response = self.call("POST", BASE + path, self.keys["A"], BODIES[("POST", path)])
            assert response.status_code in (200, 201), (resource, response.status_code, response.text[:500])
            ident = response.json()["id"]
            assert isinstance(ident, int), (resource, response.text[:500])
        self.a_ids.setdefault(resource, set()).add(ident)
        return ident

    def request_for(self, method: str, path: str, operation: dict, ident: int | None):
        params, concrete = {}, path
        for param in operation.get("parameters", []):
            param = resolve(param, self.document)
            if param["in"] == "path":
                concrete = concrete.replace("{" + param["name"] + "}", str(ident))
            elif param["in"] == "query" and param.get("required"):
                params[param["name"]] = example(param.get("schema", {}), self.document)
        assert "{" not in concrete, f"{path}: a path parameter this test cannot fill"
        body = None
        if "requestBody" in operation:
            local = path.removeprefix(BASE).replace(f"{{{_first_param(path)}}}", "{id}")
            body = BODIES.get((method, local))
            if body is not None:
                self.sequence += 1
                body = json.loads(json.dumps(body).replace("{n}", str(self.sequence)))
            else:
                content = operation["requestBody"].get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                body = example(schema, self.document)
        return concrete, body, params


def _first_param(path: str) -> str:
    return path.split("{", 1)[1].split("}", 1)[0] if "{" in path else ""


@pytest.fixture
def stage(web, redis_client, transactional_db) -> Stage:
    reseed_runtime()
    Budget.objects.all().delete()  # only this test's budgets apply
    seed_prices()  # the seed's, unless a flush removed them
    # a budget of A's so its reservations have an id (and B's budget list has something of its own)
    for agent in (AGENT_A, AGENT_B):
        make_budget(f"authz-{agent}", scope="agent", scope_key=agent, limit_tokens=10**9)
    return Stage(web.extra["url"])


def test_the_live_document_lists_the_same_operations(web):
    live = httpx.get(web.extra["url"] + BASE + "/openapi.json")
    assert live.status_code == 200
    served = {
        (method.upper(), path)
        for path, item in live.json()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert served == {(method, path) for method, path, _ in OPERATIONS}
    assert served, "the API has no operations"


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_authorization_matrix(stage: Stage, method: str, path: str, operation: dict):
    assert method != "ERROR", f"the API's OpenAPI document could not be built: {path}"
    operation = stage.document["paths"][path][method.lower()]  # as the live server documents it
    scope = scope_of(path)
    resource = resource_of(path)
    admin_only = scope == "admin"
    declared = {int(code) for code in operation.get("responses", {}) if str(code).isdigit()}
    success = {code for code in declared if 200 <= code < 300}
    assert success, f"{method} {path} declares no 2xx response"
    problems: list[str] = []

    def attempt(who: str, key: str | None, expected: set[int]) -> httpx.Response:
        ident = stage.create(resource[0]) if resource else None
        concrete, body, params = stage.request_for(method, path, operation, ident)
        if who.startswith("B") and body is not None:  # B's own objects must not carry A's mark
            body = json.loads(json.dumps(body).replace(MARK, "authz-of-b"))
        response = stage.call(method, concrete, key, body, params)
        status = response.status_code
        label = f"{who}: {method} {concrete} -> {status}"
        if status >= 500:
            problems.append(f"{label} (a server error) {response.text[:300]}")
            return response
        if status not in expected:
            problems.append(f"{label}, expected {sorted(expected)}: {response.text[:300]}")
        if status not in declared:
            problems.append(f"{label}: status not declared in the OpenAPI responses {sorted(declared)}")
        if status >= 400:
            try:
                error = response.json()["error"]
                assert set(error) >= {"code", "message", "details"}
            except Exception:
                problems.append(f"{label}: not the error shape: {response.text[:300]}")
        if status == 401 and response.headers.get("WWW-Authenticate") != "Bearer":
            problems.append(f"{label}: no WWW-Authenticate: Bearer")
        if who.startswith("B") and not path.startswith(BASE + "/admin/"):
            text = response.text
            if MARK in text or AGENT_A in text:
                problems.append(f"{label}: leaks agent A's data: {text[:300]}")
            if resource is None and status < 300 and isinstance(response.json(), dict):
                for item in response.json().get("items", []):
                    if isinstance(item, dict) and item.get("id") in stage.a_ids.get(_list_resource(path), set()):
                        problems.append(f"{label}: lists A's object {item.get('id')}")
        return response

    attempt("no key", None, {401})
    attempt("revoked key", stage.keys["revoked"], {401})
    lacking = stage.keys["A"] if admin_only else stage.key_lacking(scope)
    attempt(f"key without {scope}", lacking, {403})
    if admin_only:
        attempt("B", stage.keys["B"], {403})
        attempt("A", stage.keys["A"], {403})
        attempt("B-admin", stage.keys["B-admin"], success)
    elif resource is not None:  # A's object
        attempt("B on A's object", stage.keys["B"], {404})
        attempt("B-admin on A's object", stage.keys["B-admin"], {404})
        attempt("A", stage.keys["A"], success)
    else:
        _seed_lists(stage, path)
        attempt("B", stage.keys["B"], success)
        attempt("B-admin", stage.keys["B-admin"], success)
        attempt("A", stage.keys["A"], success)
    attempt("A-admin", stage.keys["A-admin"], success)
    assert not problems, "\n".join(problems)


def test_a_missing_object_is_404_like_another_agents(stage: Stage):
    """Another agent's object and one that does not exist answer the same, for every {id} operation."""
    checked = 0
    for method, path, _ in OPERATIONS:
        resource = resource_of(path)
        if resource is None or not resource[1]:
            continue
        operation = stage.document["paths"][path][method.lower()]
        ident = stage.create(resource[0])
        concrete, body, params = stage.request_for(method, path, operation, ident)
        theirs = stage.call(method, concrete, stage.keys["B"], body, params)
        concrete, body, params = stage.request_for(method, path, operation, 2**31 - 7)
        missing = stage.call(method, concrete, stage.keys["A"], body, params)
        assert theirs.status_code == missing.status_code == 404, (path, theirs.text, missing.text)
        assert theirs.json() == missing.json(), (path, theirs.json(), missing.json())
        checked += 1
    owned = [path for _, path, _ in OPERATIONS if "{" in path and resource_of(path)[1]]
    assert checked == len(owned)


def _list_resource(path: str) -> str:
    local = path.removeprefix(BASE)
    return {"/runs": "run", "/actions": "action", "/reservations": "reservation"}.get(local, "")


def _seed_lists(stage: Stage, path: str) -> None:
    """Before a collection request, A has at least one object of that kind (so a leak would show)."""
    kind = _list_resource(path)
    if kind and not stage.a_ids.get(kind):
        stage.create(kind)
