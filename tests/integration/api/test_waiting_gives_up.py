"""A decision nobody waits for is not taken (issue 14, item 7), over the REST API and the Python client: a
client whose wait ends tells the server (POST /actions/{id}/abandon), which closes the escalation at that
moment — expired, the safe default, audited as the api waiter giving up — so a reviewer cannot approve a
call the agent already treated as rejected; a decision that came first is kept."""

from __future__ import annotations

import uuid

import pytest

from agentops import client as c
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.integration.api.test_client_e2e import AGENT, pending_escalation

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_client_whose_wait_ends_closes_the_request(ops, alice):
    session = f"gives-up-{uuid.uuid4().hex[:8]}"
    asked = ops.request_action("send_refund", {"amount": 5}, session_id=session)
    assert asked.pending
    decision = ops.wait_for_decision(asked.id, timeout=1)
    assert decision.status == "expired" and "stopped waiting (api)" in decision.comment
    escalation = Escalation.objects.get(pk=asked.escalation_id)
    assert escalation.state == "expired"
    [event] = AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP)
    assert event.data["channel"] == "api" and event.data["waited_seconds"] == 1
    with pytest.raises(review.DecisionConflict, match="Already closed: the agent stopped waiting"):
        review.decide(escalation.pk, alice, "approved")
    assert ops.get_action(asked.id).status == "expired"


def test_require_approval_raises_and_closes_when_nobody_decides_in_time(ops):
    session = f"gives-up-{uuid.uuid4().hex[:8]}"
    calls = []

    @ops.require_approval("send_refund", session_id=session, timeout=1)
    def send_refund(amount: float) -> None:
        calls.append(amount)

    with pytest.raises(c.ActionRejected) as rejected:
        send_refund(10.0)
    assert rejected.value.decision.status == "expired" and calls == []
    assert Escalation.objects.get(session_id=session).state == "expired"


def test_abandoning_after_a_decision_keeps_the_decision(ops, alice):
    session = f"gives-up-{uuid.uuid4().hex[:8]}"
    asked = ops.request_action("send_refund", {"amount": 5}, session_id=session)
    escalation = pending_escalation(session)
    review.claim(escalation.pk, alice)
    review.decide(escalation.pk, alice, "approved")
    assert ops.abandon_action(asked.id, waited=3).status == "approved"
    assert not AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP).exists()


def test_the_async_client_closes_the_request_when_its_wait_ends(base_url, make_key):
    import asyncio

    async def main():
        async with c.AsyncAgentOps(base_url, make_key(AGENT), timeout=10) as aops:
            asked = await aops.request_action("send_refund", {"amount": 7}, session_id="gives-up-async")
            return asked, await aops.wait_for_decision(asked.id, timeout=1)

    asked, decision = asyncio.run(main())
    assert decision.status == "expired"
    assert Escalation.objects.get(pk=asked.escalation_id).state == "expired"
