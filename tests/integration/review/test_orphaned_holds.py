"""An item whose gateway hold vanished (the web process stopped mid-hold) is closed by beat once the longest
hold is over, as if the hold had ended: nobody waits for its decision any more (issue 14, item 7).
Time passing is simulated by moving ``created_at`` into the past (tests may write rows directly)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from agentops.gateway.tool_review import ask_for_calls
from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db(transaction=True)

RISKY = {"type": "function", "function": {"name": "delete_account", "arguments": '{"account": "acme"}'}}


def held_escalation(session: str, held: bool = True) -> Escalation:
    agent = agent_actions.ensure_agent("orphan-agent")
    message = {"tool_calls": [RISKY]}
    [(_, action)] = ask_for_calls(agent.pk, agent.name, session, message, "wipe acme", "mock-a", held=held)
    return Escalation.objects.get(pk=action.escalation_id)


def test_beat_closes_an_item_whose_gateway_hold_is_gone(redis_client):
    reseed_runtime()
    lost, waiting = held_escalation("lost"), held_escalation("still-held")
    annotated = held_escalation("annotated", held=False)  # answered at once: no hold was ever waiting
    long_ago = timezone.now() - timedelta(seconds=settings.GATEWAY_HOLD_SECONDS + review.HOLD_GRACE_SECONDS + 1)
    Escalation.objects.filter(pk__in=[lost.pk, annotated.pk]).update(created_at=long_ago)

    assert review.expire_overdue() == {"to_experts": [], "expired": [], "unwaited": [lost.pk]}
    closed = Escalation.objects.get(pk=lost.pk)
    assert (closed.state, closed.decision) == ("expired", "rejected")
    [event] = AuditEvent.objects.filter(escalation=closed, event=review.WAITER_GAVE_UP)
    assert (event.data["channel"], event.data["why"]) == ("gateway", "the hold waiting for it is gone")
    assert Escalation.objects.get(pk=waiting.pk).state == "pending"  # its hold may still be running
    assert Escalation.objects.get(pk=annotated.pk).state == "pending"
    assert review.expire_overdue() == {"to_experts": [], "expired": []}  # closed once
