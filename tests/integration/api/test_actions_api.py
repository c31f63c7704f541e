"""Permission requests over /api/v1/actions through the real uvicorn server: the escalation policy answers
approved at once or pending (an escalation in the reviewers' queue); the agent reads the decision the
reviewer made with review.actions.decide — the same action the review screens call —, long-polling with
``?wait=``; and every error of the action endpoints, in the one error shape."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from review import actions as review
from review.models import ActionRequest, Escalation

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = "t-agent"


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture
def client(make_key, api) -> httpx.Client:
    return api(make_key(AGENT, scopes=["actions"]))


def ask(client: httpx.Client, **body) -> dict:
    response = client.post("/actions", json={"operation": "lookup_order", **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_an_action_no_rule_fires_for_is_approved_at_once_and_recorded(client):
    answer = ask(client, arguments={"order": 42}, confidence=0.95, value=10, session_id="s-9")
    assert answer["status"] == "approved" and answer["escalation_id"] is None and answer["review_url"] is None
    assert answer["arguments"] == {"order": 42} and answer["decision"]["decision"] == "approved"
    assert answer["decision"]["arguments"] == {"order": 42} and answer["reason"] is None
    row = ActionRequest.objects.get(pk=answer["id"])
    assert (row.agent.name, row.operation, row.status, row.session_id) == (AGENT, "lookup_order", "approved", "s-9")
    assert not Escalation.objects.exists()
    again = client.get(f"/actions/{answer['id']}", params={"wait": 5})
    assert again.status_code == 200 and again.json()["status"] == "approved"


@pytest.mark.parametrize(
    ("body", "reason", "priority"),
    [
        ({"operation": "delete_account"}, "sensitive_operation", "high"),
        ({"value": 5000}, "high_value_decision", "high"),
        ({"confidence": 0.3}, "low_confidence", "medium"),
        ({"retry_count": 3}, "max_retries_exceeded", "low"),
    ],
)
def test_a_rule_that_fires_makes_it_pending_with_an_escalation(client, body, reason, priority):
    context = {"user_input": "please", "agent_analysis": "looks risky", "suggestions": ["ask first"]}
    answer = ask(client, arguments={"id": 7}, session_id="s-1", context=context, **body)
    assert answer["status"] == "pending" and answer["decision"] is None and answer["arguments"] is None
    assert (answer["reason"], answer["priority"]) == (reason, priority)
    escalation = Escalation.objects.get(pk=answer["escalation_id"])
    assert answer["review_url"] == f"/review/{escalation.pk}/"
    assert (escalation.source, escalation.run_id, escalation.agent.name) == ("api", None, AGENT)
    assert (escalation.reason, escalation.priority, escalation.state) == (reason, priority, "pending")
    assert escalation.operation == body.get("operation", "lookup_order") and escalation.arguments == {"id": 7}
    assert escalation.session_id == "s-1" and escalation.context == context
    assert escalation.value == body.get("value") and escalation.confidence == body.get("confidence")
    assert escalation.retry_count == body.get("retry_count", 0)
    assert escalation.events.filter(event="created").exists()


def test_long_poll_returns_promptly_when_a_reviewer_decides(client, alice):
    answer = ask(client, operation="send_refund", arguments={"amount": 30})
    answer_box: dict = {}

    def poll() -> None:
        begun = time.monotonic()
        answer_box["response"] = client.get(f"/actions/{answer['id']}", params={"wait": 10})
        answer_box["elapsed"] = time.monotonic() - begun

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    decided = time.monotonic()
    review.decide(answer["escalation_id"], alice, "modified", arguments={"amount": 20}, comment="max 20", confidence=80)
    thread.join(15)
    response = answer_box["response"]
    assert response.status_code == 200, response.text
    assert time.monotonic() - decided < 2.5 and answer_box["elapsed"] < 4, answer_box
    got = response.json()
    assert got["status"] == "modified" and got["arguments"] == {"amount": 20}
    assert got["requested_arguments"] == {"amount": 30}
    assert (got["comment"], got["reviewer"], got["reviewer_confidence"]) == ("max 20", "alice", 80)
    assert got["decided_at"] and got["decision"]["decision"] == "modified"


def test_long_poll_times_out_with_the_unchanged_state(client):
    answer = ask(client, operation="delete_file")
    started = time.monotonic()
    response = client.get(f"/actions/{answer['id']}", params={"wait": 1})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert 0.9 <= elapsed < 2.5, elapsed


@pytest.mark.parametrize(
    ("decision", "kwargs", "arguments", "result"),
    [
        ("approved", {}, {"path": "/tmp/x"}, None),
        ("taken_over", {"result": {"deleted": False, "why": "kept"}}, None, {"deleted": False, "why": "kept"}),
        ("rejected", {}, None, None),
    ],
)
def test_every_decision_reads_back(client, alice, decision, kwargs, arguments, result):
    answer = ask(client, operation="delete_file", arguments={"path": "/tmp/x"})
    review.claim(answer["escalation_id"], alice)
    assert client.get(f"/actions/{answer['id']}").json()["status"] == "pending"  # claimed is still pending
    review.decide(answer["escalation_id"], alice, decision, comment="done", **kwargs)
    got = client.get(f"/actions/{answer['id']}", params={"wait": 10}).json()
    assert got["status"] == decision and got["arguments"] == arguments and got["result"] == result
    assert got["reviewer"] == "alice" and got["comment"] == "done"


def test_an_expired_request_reads_as_expired(client):
    answer = ask(client, operation="delete_file")
    for _ in range(2):  # overdue once → expert queue; overdue again → the safe default
        Escalation.objects.filter(pk=answer["escalation_id"]).update(deadline_at=timezone.now() - timedelta(seconds=1))
        review.expire_overdue()
    got = client.get(f"/actions/{answer['id']}").json()
    assert got["status"] == "expired" and got["arguments"] is None and got["reviewer"] is None
    assert "safe default" in got["comment"]


def test_authentication_scope_and_ownership_errors(make_key, api, client):
    error_of(api(None).post("/actions", json={"operation": "x"}), 401, "unauthenticated")
    error_of(api("ao_000000000000_nope").get("/actions/1"), 401, "unauthenticated")
    runs_only = api(make_key(AGENT, scopes=["runs"]))
    assert error_of(runs_only.post("/actions", json={"operation": "x"}), 403, "forbidden")["details"] == {
        "scope": "actions"
    }
    error_of(runs_only.get("/actions/1"), 403, "forbidden")
    mine = ask(client, operation="delete_everything")
    theirs = api(make_key("t-other-agent"))
    for response in (
        theirs.get(f"/actions/{mine['id']}"),
        theirs.get(f"/actions/{mine['id']}", params={"wait": 1}),
        api(make_key("t-other-agent", scopes=["admin"])).get(f"/actions/{mine['id']}"),
        client.get(f"/actions/{mine['id'] + 1000}"),
    ):
        assert error_of(response, 404, "not_found")["message"] == "no such action"


def test_validation_errors(client):
    malformed = client.post("/actions", content=b'{"operation": ', headers={"Content-Type": "application/json"})
    error_of(malformed, 400, "malformed")
    for bad in (
        {},
        {"operation": ""},
        {"operation": "x" * 101},
        {"operation": "x", "confidence": 1.5},
        {"operation": "x", "retry_count": -1},
        {"operation": "x", "retry_count": 2**40},
        {"operation": "x", "arguments": [1]},
        {"operation": "x\x00"},
        {"operation": "x", "arguments": {"k": "\x00"}},
        {"operation": "x", "context": {"suggestions": "not a list"}},
        {"operation": "x", "session_id": "s" * 201},
    ):
        error_of(client.post("/actions", json=bad), 422, "invalid")
    answer = ask(client)
    error_of(client.get(f"/actions/{answer['id']}", params={"wait": 10_000}), 422, "invalid")
    error_of(client.get("/actions/0"), 422, "invalid")
    assert ActionRequest.objects.count() == 1
