"""Runs over /api/v1 through the real uvicorn server and a real Celery worker: start (idempotent, also under
concurrent identical POSTs), read with ``?wait=`` long-polling, cancel, list; and every error the run
endpoints answer, in the one error shape."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run
from review import actions as review
from review.models import Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = "t-steps"  # registered test agent functions (tests.fixtures.test_agents)
APPROVAL = "t-approval"


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def followed(client: httpx.Client, run_id: int, *statuses: str) -> Callable[[], dict | None]:
    """A predicate for wait_for (with interval=0: each call is one long poll, answered at a change or after
    5 s): the run as the API shows it once it reaches one of ``statuses``."""

    def reached() -> dict | None:
        response = client.get(f"/runs/{run_id}", params={"wait": 5})
        assert response.status_code == 200, response.text
        return response.json() if response.json()["status"] in statuses else None

    reached.describe = lambda: f"run {run_id} to reach {statuses}: it is {Run.objects.get(pk=run_id).status}"
    return reached


def test_start_follow_and_list_a_run(make_key, api, worker):
    client = api(make_key(STEPS, scopes=["runs"]))
    response = client.post("/runs", json={"input": {"topic": "api", "steps": 2}, "session_id": "s-1"})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["agent"] == STEPS and run["status"] == "queued" and run["session_id"] == "s-1"
    assert run["input"] == {"topic": "api", "steps": 2} and run["output"] is None and run["error"] == ""
    assert run["url"] == f"/runs/{run['id']}/" and not run["cancel_requested"]

    done = wait_for(followed(client, run["id"], "succeeded", "failed"), timeout=40, interval=0)
    assert done["status"] == "succeeded", done
    assert done["output"]["results"] == ["step 0", "step 1"]

    # the agent naming itself explicitly is the same as leaving it out
    other = client.post("/runs", json={"agent": STEPS, "input": {"steps": 0}})
    assert other.status_code == 201
    listed = client.get("/runs").json()
    assert listed["count"] == 2 and [r["id"] for r in listed["items"]] == [other.json()["id"], run["id"]]
    page = client.get("/runs", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 2 and [r["id"] for r in page["items"]] == [run["id"]]
    assert [r["id"] for r in client.get("/runs", params={"status": "succeeded"}).json()["items"]] == [run["id"]]
    assert client.get("/runs", params={"status": "cancelled"}).json() == {"items": [], "count": 0}


def test_same_idempotency_key_gives_the_same_run(make_key, api):
    client = api(make_key(STEPS))
    first = client.post("/runs", json={"input": {"steps": 1}}, headers={"Idempotency-Key": "order-42"})
    again = client.post("/runs", json={"input": {"steps": 1}}, headers={"Idempotency-Key": "order-42"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other_key = client.post("/runs", json={"input": {"steps": 1}}, headers={"Idempotency-Key": "order-43"})
    assert other_key.status_code == 201 and other_key.json()["id"] != first.json()["id"]
    # keys are per agent: another agent's identical key starts its own run
    theirs = api(make_key(APPROVAL)).post("/runs", json={"input": {}}, headers={"Idempotency-Key": "order-42"})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert Run.objects.filter(idempotency_key="order-42").count() == 2


def test_concurrent_identical_posts_start_one_run(make_key, api):
    key = make_key(STEPS)
    clients = [api(key) for _ in range(20)]
    barrier = threading.Barrier(len(clients))

    def post(client: httpx.Client) -> httpx.Response:
        barrier.wait()
        return client.post("/runs", json={"input": {"steps": 1}}, headers={"Idempotency-Key": "same-request"})

    with ThreadPoolExecutor(len(clients)) as pool:
        responses = list(pool.map(post, clients))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201], [r.text[:200] for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert Run.objects.filter(idempotency_key="same-request").count() == 1


def test_start_run_is_race_safe_in_the_database(transactional_db):
    """The action itself, raced by threads with their own connections (the web process may serve the
    API's requests one at a time; several web processes would not)."""
    agent = agent_actions.ensure_agent(STEPS)
    threads = 12
    barrier = threading.Barrier(threads)
    results: list = []
    errors: list = []

    def start() -> None:
        try:
            barrier.wait()
            run, created = lifecycle.start_run(agent, {"steps": 1}, idempotency_key="raced")
            results.append((run.pk, created))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=start) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(30)
    assert not errors, errors
    assert len({pk for pk, _ in results}) == 1 and sum(created for _, created in results) == 1


def test_long_poll_returns_when_the_status_changes(make_key, api, worker):
    client = api(make_key(APPROVAL))
    # The agent's own trace (W3C traceparent) continues through the API into the worker's executions.
    caller_trace = "5c0f2b6e6a3e4d1f9a8b7c6d5e4f3a2b"
    traceparent = f"00-{caller_trace}-1a2b3c4d5e6f7081-01"
    run_id = client.post(
        "/runs", json={"input": {"to": "ana@example.com"}}, headers={"traceparent": traceparent}
    ).json()["id"]
    waiting = wait_for(followed(client, run_id, "waiting_human"), timeout=40, interval=0)
    assert waiting["status"] == "waiting_human"

    # unchanged: answers at the timeout with the same state
    started = time.monotonic()
    same = client.get(f"/runs/{run_id}", params={"wait": 1})
    elapsed = time.monotonic() - started
    assert same.status_code == 200 and same.json()["status"] == "waiting_human"
    assert 0.9 <= elapsed < 2.5, elapsed

    # a reviewer decides while a long poll is in flight: it answers promptly with the new status
    reviewer = ALICE.user()
    escalation = Escalation.objects.get(run_id=run_id, state="pending")
    answer: dict = {}

    def poll() -> None:
        begun = time.monotonic()
        answer["response"] = api(None).get(
            f"/runs/{run_id}", params={"wait": 10}, headers={"Authorization": client.headers["Authorization"]}
        )
        answer["elapsed"] = time.monotonic() - begun

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    decided_at = time.monotonic()
    review.decide(escalation.pk, reviewer, "approved", comment="fine")
    thread.join(15)
    assert answer["response"].status_code == 200, answer["response"].text
    assert answer["response"].json()["status"] != "waiting_human"
    assert answer["elapsed"] < 5, answer
    assert time.monotonic() - decided_at < 3
    assert wait_for(followed(client, run_id, "succeeded"), timeout=40, interval=0)["output"]["sent"]["created"] is True
    run = Run.objects.get(pk=run_id)
    # Both executions (before and after the decision) are in the caller's trace: the run keeps it, and the
    # context later executions continue is the first execution's span, in that trace.
    assert run.trace_id == caller_trace and run.executions == 2
    version, trace_id, span_id, _ = run.trace_context["traceparent"].split("-")
    assert (version, trace_id) == ("00", caller_trace) and span_id != "1a2b3c4d5e6f7081"


def test_long_poll_on_a_finished_run_answers_at_once(make_key, api):
    client = api(make_key(STEPS))
    run_id = client.post("/runs", json={"input": {}}).json()["id"]
    Run.objects.filter(pk=run_id).update(status="succeeded", output={"ok": True})
    started = time.monotonic()
    response = client.get(f"/runs/{run_id}", params={"wait": 10})
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 1.5


def test_cancel(make_key, api, worker):
    client = api(make_key(APPROVAL))
    run_id = client.post("/runs", json={"input": {}}).json()["id"]
    wait_for(followed(client, run_id, "waiting_human"), timeout=40, interval=0)
    cancelled = client.post(f"/runs/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert Escalation.objects.get(run_id=run_id).state == "expired"  # withdrawn with the run
    error = error_of(client.post(f"/runs/{run_id}/cancel"), 409, "conflict")
    assert error["details"] == {"run": run_id, "status": "cancelled"}


def test_cancel_a_running_run_asks_the_worker(make_key, api, worker):
    client = api(make_key(STEPS))
    # a pause of its own: the worker caches tool results, and a cached t_sleep would not sleep
    pause = 2 + (time.time_ns() % 10**6) / 10**9
    # long enough (about 10 s) to be seen running even when the worker is still busy with earlier tests' runs
    run_id = client.post("/runs", json={"input": {"steps": 5, "pause": pause}}).json()["id"]
    wait_for(followed(client, run_id, "running"), timeout=40, interval=0)
    response = client.post(f"/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    assert (
        wait_for(followed(client, run_id, "cancelled", "succeeded", "failed"), timeout=40, interval=0)["status"]
        == "cancelled"
    )


def test_authentication_and_scope_errors(make_key, api):
    body = {"input": {}}
    error_of(api(None).post("/runs", json=body), 401, "unauthenticated")
    error_of(api("ao_000000000000_nope").get("/runs"), 401, "unauthenticated")
    wrong_scope = api(make_key(STEPS, scopes=["usage", "actions"]))
    for response in (
        wrong_scope.post("/runs", json=body),
        wrong_scope.get("/runs"),
        wrong_scope.get("/runs/1"),
        wrong_scope.post("/runs/1/cancel"),
    ):
        assert error_of(response, 403, "forbidden")["details"] == {"scope": "runs"}


def test_another_agents_run_is_not_found(agent_a, agent_b, make_key, api):
    mine = api(agent_a.key)
    theirs = api(agent_b.key)
    run_id = mine.post("/runs", json={"input": {"secret": "x"}}).json()["id"]
    for response in (
        theirs.get(f"/runs/{run_id}"),
        theirs.get(f"/runs/{run_id}", params={"wait": 1}),
        theirs.post(f"/runs/{run_id}/cancel"),
        mine.get(f"/runs/{run_id + 1000}"),
    ):
        assert error_of(response, 404, "not_found")["message"] == "no such run"
    assert theirs.get("/runs").json() == {"items": [], "count": 0}
    assert Run.objects.get(pk=run_id).status != "cancelled"
    # even an admin key of another agent sees nothing
    admin = api(make_key(agent_b.agent, scopes=["admin"]))
    error_of(admin.get(f"/runs/{run_id}"), 404, "not_found")


def test_validation_errors(make_key, api):
    client = api(make_key(STEPS))
    # naming another agent is forbidden; an agent that is not a registered function is invalid
    error_of(client.post("/runs", json={"agent": APPROVAL, "input": {}}), 403, "forbidden")
    unregistered = api(make_key("t-agent"))
    assert error_of(unregistered.post("/runs", json={"input": {}}), 422, "invalid")["details"]["agent"] == "t-agent"
    # malformed JSON is 400; well-formed but wrong is 422
    malformed = client.post("/runs", content=b'{"input": {', headers={"Content-Type": "application/json"})
    error_of(malformed, 400, "malformed")
    for bad in ({}, {"input": []}, {"input": {}, "session_id": "x" * 201}, {"input": {"a": "nul\x00"}}):
        error_of(client.post("/runs", json=bad), 422, "invalid")
    error_of(client.post("/runs", json={"input": {}}, headers={"Idempotency-Key": "k" * 101}), 422, "invalid")
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"status": "sleeping"}):
        error_of(client.get("/runs", params=params), 422, "invalid")
    run_id = client.post("/runs", json={"input": {}}).json()["id"]
    error_of(client.get(f"/runs/{run_id}", params={"wait": 10_000}), 422, "invalid")
    error_of(client.get(f"/runs/{run_id}", params={"wait": -1}), 422, "invalid")
    error_of(client.get("/runs/0"), 422, "invalid")
    error_of(client.get(f"/runs/{2**70}"), 422, "invalid")
    assert Run.objects.count() == 1
