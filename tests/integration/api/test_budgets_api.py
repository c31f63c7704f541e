"""Usage, reservations, remaining budgets and budgets/prices as code over /api/v1, through the real uvicorn
server (budgets/api.py): the happy paths, the refusals (402 naming the budget, 404 for another agent's
reservation, 403 for a missing scope), the admin validation errors, and bad input that must be a 4xx."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import pytest

from budgets.actions import reservations
from budgets.models import Budget, BudgetCounter, ModelPrice, Reservation, UsageRecord
from tests.fixtures.factories import make_budget, seed_prices

pytestmark = pytest.mark.django_db(transaction=True)

AGENT, OTHER = "t-budget-api", "t-budget-other"
MINI = {"model": "gpt-4o-mini", "operation": "response"}  # $0.00015 in / $0.0006 out per 1K (the seed's)


@pytest.fixture
def prices(base_url):
    """Committed seed prices and no budgets (the flush between transactional tests removes both)."""
    Budget.objects.all().delete()
    seed_prices()


@pytest.fixture
def agent(make_key, api) -> httpx.Client:
    return api(make_key(AGENT))


@pytest.fixture
def admin(make_key, api) -> httpx.Client:
    return api(make_key("t-budget-admin", scopes=["admin"]))


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict | list)
    return body["error"]


def remaining_of(items: list[dict], name: str) -> dict:
    found = [item for item in items if item["budget"] == name]
    assert len(found) == 1, items
    return found[0]


# --- usage -------------------------------------------------------------------------------------------


def test_usage_is_priced_and_counted_against_the_budgets_that_apply(agent, prices):
    make_budget("api-agent", scope="agent", scope_key=AGENT, limit_tokens=10_000, limit_usd=Decimal("1.00"))
    make_budget("api-someone-else", scope="agent", scope_key=OTHER, limit_tokens=10)
    make_budget("api-per-agent-month", scope="agent", period="month", limit_usd=Decimal("5"))

    response = agent.post("/usage", json={**MINI, "input_tokens": 1000, "output_tokens": 500, "session_id": "s-u"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["cost_usd"] == "0.00045000"  # 1000 × 0.00015/1K + 500 × 0.0006/1K
    assert {item["budget"] for item in body["remaining"]} == {"api-agent", "api-per-agent-month"}
    mine = remaining_of(body["remaining"], "api-agent")
    assert mine == {
        "budget": "api-agent",
        "scope": "agent",
        "subject": AGENT,
        "period": "day",
        "period_end": mine["period_end"],
        "limit_tokens": 10_000,
        "limit_usd": "1.0000",
        "spent_tokens": 1500,
        "spent_usd": "0.00045000",
        "reserved_tokens": 0,
        "reserved_usd": "0.00000000",
        "remaining_tokens": 8500,
        "remaining_usd": "0.99955000",
        "hard_stop": True,
    }
    end = dt.datetime.fromisoformat(mine["period_end"])
    assert end.astimezone(dt.UTC).time() == dt.time(0) and end > dt.datetime.now(dt.UTC)
    monthly = remaining_of(body["remaining"], "api-per-agent-month")
    assert monthly["subject"] == AGENT and monthly["remaining_tokens"] is None and monthly["limit_tokens"] is None
    assert Decimal(monthly["remaining_usd"]) == Decimal("4.99955")

    record = UsageRecord.objects.get(pk=body["id"])
    assert (record.agent, record.session_id, record.source, record.model) == (AGENT, "s-u", "api", "gpt-4o-mini")
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (1000, 500, Decimal("0.00045"))

    # cached input has its own price; an unknown model is priced by the "*" row
    cached = agent.post(
        "/usage",
        json={"model": "gpt-4o", "operation": "x", "input_tokens": 1000, "output_tokens": 500, "cached_tokens": 400},
    )
    assert cached.status_code == 201 and cached.json()["cost_usd"] == "0.00700000"  # (600×2.5 + 400×1.25 + 500×10)/1M
    unknown = agent.post(
        "/usage", json={"model": "no-such-model", "operation": "x", "input_tokens": 1000, "output_tokens": 1000}
    )
    assert unknown.status_code == 201 and unknown.json()["cost_usd"] == "0.00300000"
    assert UsageRecord.objects.get(pk=unknown.json()["id"]).price.model == "*"

    listed = agent.get("/budgets")
    assert listed.status_code == 200
    after = remaining_of(listed.json()["items"], "api-agent")
    assert after["spent_tokens"] == 1500 + 1500 + 2000 and after["remaining_tokens"] == 10_000 - 5000
    assert Decimal(after["spent_usd"]) == Decimal("0.01045")
    assert BudgetCounter.objects.get(budget__name="api-agent").spent_tokens == 5000


def test_usage_for_a_run_must_be_one_of_the_agents_runs(agent, make_key, prices):
    from agentops.runs.actions import agents as agent_actions
    from agentops.runs.actions import lifecycle

    theirs, _ = lifecycle.start_run(
        agent_actions.ensure_agent(OTHER), {}, session_id="s-theirs"
    )  # no worker: it stays queued
    usage = {**MINI, "input_tokens": 1, "output_tokens": 1}
    missing = error_of(agent.post("/usage", json={**usage, "run_id": 2**40}), 404, "not_found")
    # Another agent's run answers exactly like a missing one: the report is neither charged nor told apart.
    assert error_of(agent.post("/usage", json={**usage, "run_id": theirs.pk}), 404, "not_found") == missing
    assert not UsageRecord.objects.exists()


def test_usage_is_attributed_to_the_keys_agent_whatever_the_body_says(agent, prices):
    make_budget("api-victim", scope="agent", scope_key=OTHER, limit_tokens=10_000)
    body = {**MINI, "input_tokens": 100, "output_tokens": 50, "agent": OTHER, "agent_id": 1, "team": "x"}
    assert agent.post("/usage", json=body).status_code == 201
    [row] = UsageRecord.objects.all()
    assert row.agent == AGENT and row.source == "api"
    assert not BudgetCounter.objects.filter(budget__name="api-victim").exclude(spent_tokens=0).exists()


def test_a_report_beyond_what_one_call_of_the_model_can_use_is_422(agent, prices):
    """The issue's report of 2,000,000,000 tokens was charged to the global budget; now it is refused, naming
    the field and the limit: the model's context + output limit when known, else the configured ceiling."""
    everyone = make_budget("api-everyone", scope="global", limit_tokens=1_000_000)
    huge = agent.post("/usage", json={**MINI, "model": "gpt-4o", "input_tokens": 2_000_000_000, "output_tokens": 0})
    error = error_of(huge, 422, "invalid")
    assert error["details"]["errors"][0]["loc"] == ["body", "input_tokens"]
    assert error["details"]["limit"] == 128_000 + 16_384 and "144384" in error["message"]
    # A dated name is the same model; the output side is checked against the same limit.
    dated = {**MINI, "model": "gpt-4o-2024-08-06", "input_tokens": 128_000, "output_tokens": 16_385}
    error = error_of(agent.post("/usage", json=dated), 422, "invalid")
    assert error["details"]["errors"][0]["loc"] == ["body", "output_tokens"]
    # A model without a known limit: the configured ceiling (AGENTOPS_USAGE_REPORT_MAX_TOKENS, 2,000,000).
    unknown = {**MINI, "model": "in-house-llm", "input_tokens": 1_500_000, "output_tokens": 500_001}
    error = error_of(agent.post("/usage", json=unknown), 422, "invalid")
    assert error["details"]["limit"] == 2_000_000
    assert not UsageRecord.objects.exists()
    assert not BudgetCounter.objects.filter(budget=everyone).exclude(spent_tokens=0).exists()
    # Right at the limit is a call the model can make.
    at_limit = {**MINI, "model": "gpt-4o", "input_tokens": 128_000, "output_tokens": 16_384}
    assert agent.post("/usage", json=at_limit).status_code == 201
    # A settle is self-reported usage too: the same limit applies.
    held = reserve(agent, 10, 10).json()
    error = error_of(
        agent.post(f"/reservations/{held['id']}/settle", json={"input_tokens": 2_000_000_000, "output_tokens": 0}),
        422,
        "invalid",
    )
    assert error["details"]["errors"][0]["loc"] == ["body", "input_tokens"]
    assert Reservation.objects.get(pk=held["id"]).status == "held"


BAD_USAGE = {
    "negative tokens": {**MINI, "input_tokens": -1, "output_tokens": 1},
    "tokens over 2^63": {**MINI, "input_tokens": 2**64, "output_tokens": 1},
    "tokens over the ledger's int": {**MINI, "input_tokens": 2**31, "output_tokens": 1},
    "cached more than input": {**MINI, "input_tokens": 10, "output_tokens": 1, "cached_tokens": 11},
    "tokens as a string": {**MINI, "input_tokens": "many", "output_tokens": 1},
    "fractional tokens": {**MINI, "input_tokens": 1.5, "output_tokens": 1},
    "no model": {"operation": "x", "input_tokens": 1, "output_tokens": 1},
    "empty model": {**MINI, "model": "", "input_tokens": 1, "output_tokens": 1},
    "model too long": {**MINI, "model": "m" * 121, "input_tokens": 1, "output_tokens": 1},
    "NUL in operation": {**MINI, "operation": "a\x00b", "input_tokens": 1, "output_tokens": 1},
    "run_id over 2^63": {**MINI, "input_tokens": 1, "output_tokens": 1, "run_id": 2**63},
    "a list": [1, 2],
    "a string": "usage",
    "a number": 7,
    "null": None,
}


@pytest.mark.parametrize("body", list(BAD_USAGE.values()), ids=list(BAD_USAGE))
def test_bad_usage_is_422_never_a_server_error(agent, prices, body):
    error_of(agent.post("/usage", json=body), 422, "invalid")
    assert not UsageRecord.objects.exists()


def test_bad_bodies_are_4xx(agent, prices):
    error_of(agent.post("/usage", content=b"{not json", headers={"Content-Type": "application/json"}), 400, "malformed")
    for path in ("/reservations", "/reservations/1/settle"):
        error_of(agent.post(path, json=[1]), 422, "invalid")
    error_of(
        agent.post("/reservations/99999999999999999999/settle", json={"input_tokens": 1, "output_tokens": 1}),
        422,
        "invalid",
    )
    error_of(agent.post("/reservations/0/release"), 422, "invalid")
    error_of(
        agent.post(
            "/reservations",
            json={**MINI, "estimated_input_tokens": 1, "estimated_output_tokens": 1, "lease_seconds": 0},
        ),
        422,
        "invalid",
    )
    error_of(
        agent.post("/reservations", json={**MINI, "estimated_input_tokens": -5, "estimated_output_tokens": 1}),
        422,
        "invalid",
    )
    error_of(agent.get("/budgets", params={"session_id": "x" * 201}), 422, "invalid")
    error_of(agent.get("/budgets", params={"session_id": "a\x00"}), 422, "invalid")


def test_a_lone_surrogate_is_422(agent, prices):
    lone = b'{"model": "\\ud800", "operation": "x", "input_tokens": 1, "output_tokens": 1}'
    error_of(agent.post("/usage", content=lone, headers={"Content-Type": "application/json"}), 422, "invalid")


def test_a_price_times_the_tokens_that_overflows_the_ledger_is_422(agent, admin, prices):
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    dear = ModelPrice.objects.create(
        model="dear", input_per_1k=Decimal("999999"), output_per_1k=Decimal("999999"), effective_from=since
    )
    response = agent.post(
        "/usage", json={"model": dear.model, "operation": "x", "input_tokens": 2_000_000, "output_tokens": 0}
    )
    error_of(response, 422, "invalid")


# --- reservations ------------------------------------------------------------------------------------


def reserve(client: httpx.Client, tokens_in: int, tokens_out: int, **extra) -> httpx.Response:
    return client.post(
        "/reservations",
        json={**MINI, "estimated_input_tokens": tokens_in, "estimated_output_tokens": tokens_out, **extra},
    )


def test_reserve_settle_is_idempotent_and_remaining_is_exact(agent, prices):
    make_budget("api-hold", scope="agent", scope_key=AGENT, limit_tokens=5000, limit_usd=Decimal("1"))

    held = reserve(agent, 1000, 1000, session_id="s-r", lease_seconds=60)
    assert held.status_code == 201, held.text
    reservation = held.json()
    assert reservation["tokens"] == 2000 and reservation["usd"] == "0.00075000" and reservation["note"] is None
    expires = dt.datetime.fromisoformat(reservation["expires_at"])
    assert 50 < (expires - dt.datetime.now(dt.UTC)).total_seconds() <= 61
    row = Reservation.objects.get(pk=reservation["id"])
    assert (row.agent, row.session_id, row.status, row.model) == (AGENT, "s-r", "held", "gpt-4o-mini")

    during = remaining_of(agent.get("/budgets").json()["items"], "api-hold")
    assert (during["reserved_tokens"], during["remaining_tokens"]) == (2000, 3000)
    assert during["reserved_usd"] == "0.00075000"

    settled = agent.post(f"/reservations/{reservation['id']}/settle", json={"input_tokens": 800, "output_tokens": 300})
    assert settled.status_code == 200, settled.text
    first = settled.json()
    assert first["cost_usd"] == "0.00030000"  # 800 × 0.00015/1K + 300 × 0.0006/1K, the reserved model
    after = remaining_of(first["remaining"], "api-hold")
    assert (after["spent_tokens"], after["reserved_tokens"], after["remaining_tokens"]) == (1100, 0, 3900)
    assert (after["spent_usd"], after["reserved_usd"], after["remaining_usd"]) == (
        "0.00030000",
        "0.00000000",
        "0.99970000",
    )
    record = UsageRecord.objects.get(pk=first["usage_id"])
    assert (record.reservation_id, record.model, record.source, record.agent) == (row.pk, "gpt-4o-mini", "api", AGENT)

    again = agent.post(f"/reservations/{reservation['id']}/settle", json={"input_tokens": 800, "output_tokens": 300})
    assert again.status_code == 200 and again.json()["usage_id"] == first["usage_id"]
    assert remaining_of(again.json()["remaining"], "api-hold")["spent_tokens"] == 1100  # counted once
    assert UsageRecord.objects.filter(reservation_id=row.pk).count() == 1
    assert agent.post(f"/reservations/{reservation['id']}/release").json() == {"released": False}

    # settling with another model prices that model
    other = reserve(agent, 100, 100).json()
    settled = agent.post(
        f"/reservations/{other['id']}/settle", json={"input_tokens": 1000, "output_tokens": 0, "model": "gpt-4o"}
    )
    assert settled.status_code == 200 and settled.json()["cost_usd"] == "0.00250000"
    error_of(
        agent.post(
            f"/reservations/{other['id']}/settle", json={"input_tokens": 1, "output_tokens": 1, "cached_tokens": 2}
        ),
        422,
        "invalid",
    )


def test_release_gives_the_hold_back(agent, prices):
    make_budget("api-release", scope="agent", scope_key=AGENT, limit_tokens=3000)
    held = reserve(agent, 1000, 1000).json()
    assert remaining_of(agent.get("/budgets").json()["items"], "api-release")["remaining_tokens"] == 1000

    released = agent.post(f"/reservations/{held['id']}/release")
    assert released.status_code == 200 and released.json() == {"released": True}
    assert Reservation.objects.get(pk=held["id"]).status == "released"
    item = remaining_of(agent.get("/budgets").json()["items"], "api-release")
    assert (item["reserved_tokens"], item["spent_tokens"], item["remaining_tokens"]) == (0, 0, 3000)
    assert agent.post(f"/reservations/{held['id']}/release").json() == {"released": False}


def test_a_refused_reservation_is_402_naming_the_budget(agent, prices):
    make_budget("api-small", scope="agent", scope_key=AGENT, limit_tokens=1000, downgrade_model="gpt-4o-mini")
    assert reserve(agent, 300, 300).status_code == 201

    refused = reserve(agent, 300, 200)
    error = error_of(refused, 402, "budget_exceeded")
    assert 'budget "api-small"' in error["message"] and "400 of 1000 tokens left" in error["message"]
    assert error["details"] == {"budget": "api-small", "cheaper_model": "gpt-4o-mini"}
    assert Reservation.objects.count() == 1  # nothing held for the refused call

    make_budget("api-ops", scope="global", operation_limits={"response": 100})
    per_call = error_of(reserve(agent, 60, 60), 402, "budget_exceeded")
    assert "api-ops" in per_call["message"] and "at most 100 tokens per response call" in per_call["message"]
    assert per_call["details"] == {"budget": "api-ops", "cheaper_model": None}


def test_usd_limits_refuse_too(agent, prices):
    make_budget("api-dollars", scope="agent", scope_key=AGENT, limit_usd=Decimal("0.001"))
    error = error_of(reserve(agent, 0, 2000), 402, "budget_exceeded")  # $0.0012
    assert "api-dollars" in error["message"] and "$0.0010 of $0.0010 left" in error["message"]


def test_no_budget_applies(agent, prices):
    make_budget("api-not-mine", scope="agent", scope_key=OTHER, limit_tokens=1)
    response = reserve(agent, 1000, 500)
    assert response.status_code == 201
    assert response.json() == {
        "id": None,
        "expires_at": None,
        "tokens": 1500,
        "usd": "0.00045000",
        "note": "no budget applies",
    }
    assert agent.get("/budgets").json() == {"items": []}


def test_another_agents_reservation_is_404_like_a_missing_one(agent, make_key, api, prices):
    make_budget("api-each-agent", scope="agent", limit_tokens=10_000)
    held = reserve(agent, 100, 100).json()
    other = api(make_key(OTHER))
    body = {"input_tokens": 1, "output_tokens": 1}
    theirs = error_of(other.post(f"/reservations/{held['id']}/settle", json=body), 404, "not_found")
    missing = error_of(other.post(f"/reservations/{2**40}/settle", json=body), 404, "not_found")
    assert theirs == missing
    error_of(other.post(f"/reservations/{held['id']}/release"), 404, "not_found")
    # admin scope gives no view of another agent's reservations either
    error_of(api(make_key(OTHER, scopes=["admin"])).post(f"/reservations/{held['id']}/release"), 404, "not_found")
    assert Reservation.objects.get(pk=held["id"]).status == "held"
    assert agent.post(f"/reservations/{held['id']}/release").json() == {"released": True}


def test_session_budgets_show_with_the_session(agent, prices):
    make_budget("api-session", scope="session", limit_tokens=700)
    assert agent.get("/budgets").json() == {"items": []}
    error_of(reserve(agent, 400, 400, session_id="s-1"), 402, "budget_exceeded")
    assert reserve(agent, 400, 200, session_id="s-1").status_code == 201
    items = agent.get("/budgets", params={"session_id": "s-1"}).json()["items"]
    assert remaining_of(items, "api-session")["subject"] == "s-1"
    assert remaining_of(items, "api-session")["remaining_tokens"] == 100
    assert (
        remaining_of(agent.get("/budgets", params={"session_id": "s-2"}).json()["items"], "api-session")[
            "remaining_tokens"
        ]
        == 700
    )


def test_scopes(make_key, api, prices):
    make_budget("api-scopes", scope="agent", scope_key=AGENT, limit_tokens=10_000)
    reader = api(make_key(AGENT, scopes=["budgets:read"]))
    assert error_of(reader.post("/usage", json={**MINI, "input_tokens": 1, "output_tokens": 1}), 403, "forbidden")[
        "details"
    ] == {"scope": "usage"}
    error_of(reserve(reader, 1, 1), 403, "forbidden")
    assert reader.get("/budgets").status_code == 200
    user = api(make_key(AGENT, scopes=["usage"]))
    error_of(user.get("/budgets"), 403, "forbidden")
    held = reserve(user, 1, 1).json()
    error_of(reader.post(f"/reservations/{held['id']}/release"), 403, "forbidden")
    runs_only = api(make_key(AGENT, scopes=["runs"]))
    error_of(runs_only.get("/budgets"), 403, "forbidden")
    agent_key = api(make_key(AGENT))  # every agent scope, never admin
    for method, path in (
        ("GET", "/admin/budgets"),
        ("POST", "/admin/budgets"),
        ("GET", "/admin/prices"),
        ("DELETE", "/admin/prices/1"),
    ):
        error_of(agent_key.request(method, path, json={"name": "x", "limit_tokens": 1}), 403, "forbidden")
    error_of(api(None).get("/budgets"), 401, "unauthenticated")


def test_a_store_outage_is_503_budget_unavailable(prices, make_key, monkeypatch):
    """The fail-closed path (PostgreSQL unreachable) cannot be staged in the live server without taking the
    database away from every other test, so this one goes through the API in-process."""
    from ninja.testing import TestClient

    from agentops.runtime.protocols import BudgetUnavailable
    from agentops.urls import api as ninja_api

    def down(*args, **kwargs):
        raise BudgetUnavailable("the budget store (PostgreSQL) is unreachable, so no call is admitted: boom")

    monkeypatch.setattr(reservations, "reserve", down)
    client = TestClient(ninja_api)
    headers = {"Authorization": f"Bearer {make_key(AGENT)}"}
    body = {**MINI, "estimated_input_tokens": 1, "estimated_output_tokens": 1}
    response = client.post("/reservations", json=body, headers=headers)
    assert response.status_code == 503
    assert (
        response.json()["error"]["code"] == "budget_unavailable"
        and "unreachable" in response.json()["error"]["message"]
    )


# --- budgets and prices as code (admin) ----------------------------------------------------------------


def test_admin_budget_crud(admin, agent, prices):
    created = admin.post(
        "/admin/budgets",
        json={
            "name": "api-code",
            "scope": "agent",
            "scope_key": AGENT,
            "limit_tokens": 1000,
            "limit_usd": "2.5",
            "operation_limits": {"planning": 500},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "api-code" and body["limit_usd"] == "2.5000" and body["hard_stop"] is True
    assert body["operation_limits"] == {"planning": 500} and body["timezone"] == "UTC" and body["enabled"]
    assert body["period"] == "day" and body["on_block"] == "escalate"
    budget_id = body["id"]

    # in force at once: the agent's reservations are checked against it
    assert error_of(reserve(agent, 600, 600), 402, "budget_exceeded")["details"]["budget"] == "api-code"

    assert admin.get(f"/admin/budgets/{budget_id}").json() == body
    listed = admin.get("/admin/budgets").json()
    assert listed["count"] == 1 and listed["items"] == [body]

    changed = admin.put(f"/admin/budgets/{budget_id}", json={"limit_tokens": 5000, "limit_usd": None})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["limit_tokens"], changed.json()["limit_usd"], changed.json()["name"]) == (
        5000,
        None,
        "api-code",
    )
    assert changed.json()["operation_limits"] == {"planning": 500}  # untouched
    assert reserve(agent, 600, 600).status_code == 201

    error_of(admin.put(f"/admin/budgets/{budget_id}", json={"name": None}), 422, "invalid")
    gone = admin.delete(f"/admin/budgets/{budget_id}")
    assert gone.status_code == 204 and gone.content == b""
    error_of(admin.get(f"/admin/budgets/{budget_id}"), 404, "not_found")
    error_of(admin.put(f"/admin/budgets/{budget_id}", json={}), 404, "not_found")
    error_of(admin.delete(f"/admin/budgets/{budget_id}"), 404, "not_found")
    assert not Budget.objects.exists()


def test_a_duplicate_budget_name_is_409(admin, prices):
    assert admin.post("/admin/budgets", json={"name": "api-dup", "limit_tokens": 10}).status_code == 201
    error = error_of(admin.post("/admin/budgets", json={"name": "api-dup", "limit_tokens": 20}), 409, "conflict")
    assert error["details"]["field"] == "name" and "api-dup" in error["message"]
    other = admin.post("/admin/budgets", json={"name": "api-dup-2", "limit_tokens": 10}).json()
    error_of(admin.put(f"/admin/budgets/{other['id']}", json={"name": "api-dup"}), 409, "conflict")
    # the name and another problem: every problem, as 422
    both = error_of(admin.post("/admin/budgets", json={"name": "api-dup"}), 422, "invalid")
    assert set(both["details"]["fields"]) == {"name", "limit_tokens"}


BAD_BUDGETS = {
    "no limit at all": ({"name": "b"}, "limit_tokens"),
    "a key on a global budget": ({"name": "b", "limit_tokens": 1, "scope_key": "x"}, "scope_key"),
    "unknown time zone": ({"name": "b", "limit_tokens": 1, "timezone": "Mars/Olympus"}, "timezone"),
    "non-positive operation limit": ({"name": "b", "operation_limits": {"planning": 0}}, "operation_limits"),
    "bad operation name": ({"name": "b", "operation_limits": {"a b": 5}}, "operation_limits"),
    "zero token limit": ({"name": "b", "limit_tokens": 0}, "limit_tokens"),
    "negative dollars": ({"name": "b", "limit_usd": "-1"}, "limit_usd"),
    "too many decimals": ({"name": "b", "limit_usd": "0.00001"}, "limit_usd"),
    "too many digits": ({"name": "b", "limit_usd": "1e20"}, "limit_usd"),
    "blank name": ({"name": "  ", "limit_tokens": 1}, "name"),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_BUDGETS.values()), ids=list(BAD_BUDGETS))
def test_admin_budget_validation_is_the_screens(admin, prices, body, field):
    error = error_of(admin.post("/admin/budgets", json=body), 422, "invalid")
    assert field in error["details"]["fields"], error
    assert ["body", field] in [e["loc"] for e in error["details"]["errors"]]
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"name": "b", "scope": "planet", "limit_tokens": 1},
        {"name": "b", "limit_tokens": 2**63},
        {"name": "b", "limit_usd": "lots"},
        {"name": "b", "soft_threshold_pct": 101, "limit_tokens": 1},
        {"name": "b", "operation_limits": [1]},
        {"name": "b" * 101, "limit_tokens": 1},
        {"name": "b\x00", "limit_tokens": 1},
        ["name"],
    ],
)
def test_admin_budget_schema_errors_are_422(admin, prices, body):
    error_of(admin.post("/admin/budgets", json=body), 422, "invalid")
    assert not Budget.objects.exists()


def test_admin_budget_update_is_validated(admin, prices):
    made = admin.post("/admin/budgets", json={"name": "api-upd", "limit_tokens": 10}).json()
    error = error_of(admin.put(f"/admin/budgets/{made['id']}", json={"limit_tokens": None}), 422, "invalid")
    assert "limit_tokens" in error["details"]["fields"]
    assert Budget.objects.get(pk=made["id"]).limit_tokens == 10


def test_admin_prices(admin, agent, prices):
    listed = admin.get("/admin/prices").json()
    assert listed["count"] == 3 and all(item["in_force"] for item in listed["items"])

    now = admin.post("/admin/prices", json={"model": " api-model ", "input_per_1k": "0.01", "output_per_1k": 0.02})
    assert now.status_code == 201, now.text
    row = now.json()
    assert (row["model"], row["input_per_1k"], row["output_per_1k"], row["cached_input_per_1k"]) == (
        "api-model",
        "0.010000",
        "0.020000",
        None,
    )
    assert row["in_force"] and row["created_by"] == "api:t-budget-admin"
    usage = agent.post(
        "/usage", json={"model": "api-model", "operation": "x", "input_tokens": 1000, "output_tokens": 1000}
    )
    assert usage.json()["cost_usd"] == "0.03000000"

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    future = admin.post(
        "/admin/prices",
        json={
            "model": "api-model",
            "input_per_1k": "1",
            "output_per_1k": "1",
            "cached_input_per_1k": "0.5",
            "effective_from": later.isoformat(),
            "note": "raise",
        },
    )
    assert (
        future.status_code == 201
        and not future.json()["in_force"]
        and future.json()["cached_input_per_1k"] == "0.500000"
    )
    same = admin.post(
        "/admin/prices",
        json={"model": "api-model", "input_per_1k": "2", "output_per_1k": "2", "effective_from": later.isoformat()},
    )
    error_of(same, 409, "conflict")
    mine = admin.get("/admin/prices", params={"model": "api-model"}).json()
    assert [item["id"] for item in mine["items"]] == [future.json()["id"], row["id"]]

    # a charged price stays in the history; an uncharged one can go
    error_of(admin.delete(f"/admin/prices/{row['id']}"), 409, "conflict")
    assert admin.delete(f"/admin/prices/{future.json()['id']}").status_code == 204
    error_of(admin.delete(f"/admin/prices/{future.json()['id']}"), 404, "not_found")
    assert ModelPrice.objects.filter(model="api-model").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "input_per_1k": "-1", "output_per_1k": "1"}, "input_per_1k"),
        ({"model": "m", "input_per_1k": "1", "output_per_1k": "1.0000001"}, "output_per_1k"),
        ({"model": "m", "input_per_1k": "1", "output_per_1k": "1e9"}, "output_per_1k"),
        ({"model": "  ", "input_per_1k": "1", "output_per_1k": "1"}, "model"),
        (
            {"model": "m", "input_per_1k": "1", "output_per_1k": "1", "effective_from": "2020-01-01T00:00:00Z"},
            "effective_from",
        ),
        ({"model": "m", "input_per_1k": "x", "output_per_1k": "1"}, None),
        (
            {"model": "m", "input_per_1k": "1", "output_per_1k": "1", "effective_from": "9999-12-31T23:59:59-14:00"},
            None,
        ),
        ({"input_per_1k": "1", "output_per_1k": "1"}, None),
    ],
)
def test_admin_price_validation(admin, prices, body, field):
    error = error_of(admin.post("/admin/prices", json=body), 422, "invalid")
    if field is not None:
        assert field in error["details"]["fields"], error
    assert not ModelPrice.objects.filter(model="m").exists()


# --- session budgets isolate agents --------------------------------------------------------------------


def test_one_agent_spending_its_session_leaves_another_agents_session_of_the_same_id_alone(
    agent, make_key, api, prices
):
    """Session budgets count per (agent, session): agent A exhausting its "s1" does not refuse agent B's "s1"."""
    make_budget("api-per-session", scope="session", limit_tokens=1000)
    other = api(make_key(OTHER))
    assert reserve(agent, 600, 400, session_id="s1").status_code == 201  # A's "s1" is full
    error = error_of(reserve(agent, 1, 0, session_id="s1"), 402, "budget_exceeded")
    assert error["details"]["budget"] == "api-per-session"
    assert reserve(other, 600, 400, session_id="s1").status_code == 201  # B's "s1" is its own
    # Usage reported after the fact counts per (agent, session) too.
    assert (
        agent.post("/usage", json={**MINI, "input_tokens": 500, "output_tokens": 0, "session_id": "s2"}).status_code
        == 201
    )
    mine = remaining_of(agent.get("/budgets", params={"session_id": "s2"}).json()["items"], "api-per-session")
    theirs = remaining_of(other.get("/budgets", params={"session_id": "s2"}).json()["items"], "api-per-session")
    assert (mine["subject"], mine["spent_tokens"]) == ("s2", 500)
    assert (theirs["subject"], theirs["spent_tokens"], theirs["remaining_tokens"]) == ("s2", 0, 1000)
    assert reserve(other, 600, 400, session_id="s2").status_code == 201
