"""The Python client (agentops/client.py) end to end against the real server (uvicorn + Celery worker):
the ``require_approval`` decorator with a reviewer deciding each escalation through review.actions
(approved, modified, rejected, taken over — sync and async), a run started and awaited by long-polling,
reservations settled and released, and the API's errors as the client's exceptions."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from agentops import client as c
from budgets.actions.prices import set_price
from review import actions as review
from review.models import Escalation
from tests.fixtures.waiting import wait_for, wait_for_async
from tests.integration.api.conftest import CLIENT_AGENT as AGENT

pytestmark = pytest.mark.django_db(transaction=True)


def pending_escalation(session_id: str) -> Escalation:
    """The escalation the decorated call created (it shows up once the POST /actions committed)."""
    pending = Escalation.objects.filter(source="api", session_id=session_id, state="pending")
    return wait_for(pending.first, timeout=15, interval=0.05, message=f"a pending escalation for {session_id!r}")


def test_require_approval_approve_modify_reject_take_over(ops, alice):
    calls: list[tuple] = []
    session = f"client-{uuid.uuid4().hex[:8]}"

    # "send_*" operations are sensitive in the default escalation policy: every call waits for a reviewer
    @ops.require_approval("send_refund", value="amount", confidence=0.9, session_id=session, timeout=30)
    def send_refund(customer: str, amount: float, note: str = "") -> dict:
        calls.append((customer, amount, note))
        return {"refunded": amount, "to": customer}

    def decided(decision: str, **options):
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(send_refund, "c-42", 250.0, note="late delivery")
            escalation = pending_escalation(session)
            assert escalation.operation == "send_refund" and escalation.value == 250.0
            assert escalation.arguments == {"customer": "c-42", "amount": 250.0, "note": "late delivery"}
            time.sleep(0.3)  # the client is now long-polling GET /actions/{id}?wait=
            review.decide(escalation.pk, alice, decision, **options)
            return future.result(timeout=30)

    assert decided("approved") == {"refunded": 250.0, "to": "c-42"}
    assert calls.pop() == ("c-42", 250.0, "late delivery")

    assert decided("modified", arguments={"amount": 100.0}, comment="partial refund") == {
        "refunded": 100.0,
        "to": "c-42",
    }
    assert calls.pop() == ("c-42", 100.0, "late delivery")  # merged over the originals by name

    with pytest.raises(c.ActionRejected) as rejected:
        decided("rejected", comment="no refunds this month")
    assert rejected.value.decision.status == "rejected" and rejected.value.comment == "no refunds this month"
    assert rejected.value.decision.reviewer == "alice"

    assert decided("taken_over", result={"refunded": 0, "by": "a human"}) == {"refunded": 0, "by": "a human"}
    assert calls == []  # neither the rejected nor the taken-over call ran the function


def test_approved_at_once_calls_without_waiting_and_decisions_can_be_read(ops, alice):
    session = f"client-{uuid.uuid4().hex[:8]}"

    @ops.require_approval("lookup_order", confidence=0.99, session_id=session)
    def lookup_order(order_id: int) -> str:
        return f"order {order_id}"

    started = time.monotonic()
    assert lookup_order(7) == "order 7"  # no rule fires: approved at once, nothing queued
    assert time.monotonic() - started < 5
    assert not Escalation.objects.filter(session_id=session).exists()

    pending = ops.request_action("delete_account", {"user": "u1"}, session_id=session, value=10)
    assert pending.status == "pending" and pending.escalation_id and pending.review_url
    assert ops.get_action(pending.id).pending
    # nobody decides: the long-poll answers after its wait with the request still pending
    started = time.monotonic()
    assert ops.get_action(pending.id, wait=1).status == "pending"
    assert 0.8 <= time.monotonic() - started < 5
    timer = threading.Timer(0.5, review.decide, (pending.escalation_id, alice, "approved"))
    timer.start()
    decision = ops.wait_for_decision(pending.id, timeout=20)
    timer.join()
    assert decision.status == "approved" and decision.arguments == {"user": "u1"}

    with pytest.raises(c.NotFound):
        ops.get_action(10**9)


async def test_async_require_approval(base_url, make_key, alice):
    session = f"client-{uuid.uuid4().hex[:8]}"
    async with c.AsyncAgentOps(base_url, make_key(AGENT), timeout=10) as ops:

        @ops.require_approval("send_email", session_id=session, timeout=30)
        async def send_email(to: str, body: str) -> str:
            await asyncio.sleep(0)
            return f"sent {body!r} to {to}"

        task = asyncio.create_task(send_email("ana@example.org", "hello"))

        def pending() -> Escalation | None:
            assert not task.done(), task  # the call ended without asking
            return Escalation.objects.filter(session_id=session, state="pending").first()

        escalation = await wait_for_async(pending, timeout=15, interval=0.05, message="the pending escalation")
        review.decide(escalation.pk, alice, "modified", arguments={"to": "ops@example.org"})
        assert await asyncio.wait_for(task, 30) == "sent 'hello' to ops@example.org"


def test_start_a_run_and_wait_for_it(ops, worker):
    run = ops.start_run(input={"topic": "client", "steps": 1}, idempotency_key=f"k-{uuid.uuid4().hex}")
    assert run.agent == AGENT and run.status in ("queued", "running")
    again = ops.start_run(input={"topic": "client", "steps": 1}, idempotency_key=f"k-{uuid.uuid4().hex}")
    assert again.id != run.id  # a different key is a different run
    done = ops.wait_for_run(run.id, timeout=60)
    assert done.status == "succeeded", done
    assert done.output["results"] == ["step 0"]
    assert ops.wait_for_run(again.id, timeout=60).finished
    listed = ops.list_runs(status="succeeded")
    assert run.id in {item.id for item in listed.items} and listed.count >= 1
    with pytest.raises(c.Conflict):
        ops.cancel_run(run.id)
    with pytest.raises(c.Forbidden):
        ops.start_run("t-approval", {})


def test_the_same_idempotency_key_gives_the_same_run(ops, worker):
    key = f"k-{uuid.uuid4().hex}"
    first = ops.start_run(input={"steps": 1}, idempotency_key=key)
    assert ops.start_run(input={"steps": 1}, idempotency_key=key).id == first.id
    assert ops.wait_for_run(first.id, timeout=60).status == "succeeded"


def test_reserve_settle_and_release(ops):
    set_price("gpt-4o-mini", Decimal("0.15"), Decimal("0.60"))  # a flush removed the seeded prices
    with ops.reservation("gpt-4o-mini", "client-e2e", 1000, 500) as reserved:
        reserved.use(800, 300)
    assert reserved.usage is not None and reserved.usage.cost_usd > 0
    if reserved.id is not None:  # a budget applied: settling again gives the same usage
        again = ops.settle(reserved.id, 800, 300)
        assert again.id == reserved.usage.id

    with pytest.raises(ZeroDivisionError), ops.reservation("gpt-4o-mini", "client-e2e", 1000, 500) as failed:
        raise ZeroDivisionError("the model call failed")
    if failed.id is not None:
        assert ops.release(failed.id) is False  # already released on the exception

    usage = ops.record_usage("gpt-4o-mini", "client-e2e", 100, 50, session_id="s1")
    assert usage.id and usage.cost_usd > 0
    assert isinstance(ops.budgets(), list)


def test_errors_are_typed(base_url, make_key):
    with (
        c.AgentOps(base_url, "ao_000000000000_not-a-key", max_retries=0) as anonymous,
        pytest.raises(c.Unauthenticated),
    ):
        anonymous.budgets()
    with c.AgentOps(base_url, make_key(AGENT, scopes=["budgets:read"])) as reader:
        with pytest.raises(c.Forbidden) as forbidden:
            reader.request_action("send_x")
        assert forbidden.value.details == {"scope": "actions"}
        with pytest.raises(c.Forbidden):
            reader.create_budget(name="nope")
        with pytest.raises(c.NotFound):
            reader._send(c._Call("GET", "/no-such-endpoint"))
    with c.AgentOps(base_url, make_key(AGENT)) as ops:
        with pytest.raises(c.InvalidRequest) as invalid:
            ops.request_action("", {})
        assert invalid.value.status == 422 and invalid.value.code == "invalid"


def test_budgets_as_code_and_budget_exceeded(base_url, make_key):
    with c.AgentOps(base_url, make_key(AGENT, scopes=["admin"])) as admin:
        budget = admin.create_budget(
            name=f"client-e2e-{uuid.uuid4().hex[:6]}",
            scope="agent",
            scope_key=AGENT,
            period="day",
            limit_tokens=5000,
            hard_stop=True,
            on_block="fail",
        )
        assert budget["id"] and budget["limit_tokens"] == 5000

        with admin.reservation("gpt-4o-mini", "client-e2e", 1000, 500) as reserved:
            reserved.use(800, 300)
        assert reserved.id is not None and reserved.tokens == 1500
        assert admin.settle(reserved.id, 800, 300).id == reserved.usage.id  # settling twice: the same usage
        mine = [item for item in admin.budgets() if item.budget in (budget["id"], budget["name"])]
        assert mine and mine[0].spent_tokens == 1100 and mine[0].remaining_tokens == 3900

        with pytest.raises(c.BudgetExceeded) as exceeded:
            admin.reserve("gpt-4o-mini", "client-e2e", 4000, 1000)
        assert exceeded.value.status == 402 and exceeded.value.code == "budget_exceeded"

        assert admin.update_budget(budget["id"], limit_tokens=50_000)["limit_tokens"] == 50_000
        held = admin.reserve("gpt-4o-mini", "client-e2e", 4000, 1000)
        assert held.id is not None and admin.release(held.id) is True
        admin.delete_budget(budget["id"])
        with pytest.raises(c.NotFound):
            admin.get_budget(budget["id"])
