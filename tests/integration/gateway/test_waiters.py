"""A decision nobody waits for is not taken (issue 14, item 7), at the gateway: a hold that ends before a
reviewer decided closes the escalation at that moment — expired, the safe default, with an audit event
naming the gateway as the waiter that gave up — the model is told that no reviewer decided in time (not
that a reviewer expired it), and a reviewer who then tries to decide is told the item is already closed.

This module runs on the session's second gateway process, with a 2-second hold (GATEWAY_HOLD_SECONDS)."""

from __future__ import annotations

import pytest

from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.stack import SHORT_HOLD_SECONDS, Proc
from tests.integration.gateway.test_gateway import RISKY
from tests.integration.gateway.test_tool_review import holding_client, streamed

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_SECONDS = SHORT_HOLD_SECONDS


@pytest.fixture
def gateway_web(short_hold_gateway_web) -> Proc:
    """The session's second gateway process (tests/fixtures/stack.py), holding answers for only HOLD_SECONDS."""
    return short_hold_gateway_web


def assert_closed_because_the_gateway_gave_up(agent: str) -> None:
    [escalation] = Escalation.objects.filter(agent__name=agent)
    assert (escalation.state, escalation.decision) == ("expired", "rejected")
    assert "stopped waiting (gateway)" in escalation.comment
    [event] = AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP)
    assert event.data["channel"] == "gateway" and event.data["why"] == f"the hold ended after {HOLD_SECONDS} s"
    assert HOLD_SECONDS <= event.data["waited_seconds"] < HOLD_SECONDS + 3
    with pytest.raises(review.DecisionConflict, match="Already closed: the agent stopped waiting"):
        review.decide(escalation.pk, ALICE.user(), "approved")
    assert Escalation.objects.get(pk=escalation.pk).decided_by is None  # the late approval was not applied


def test_a_hold_nobody_decides_closes_the_escalation_and_tells_the_model(client, make_key, mock):
    sdk = holding_client(client, make_key, "wt-hold")
    answer = sdk.chat.completions.create(
        model="mock-a", messages=[{"role": "user", "content": "wipe acme"}], extra_body={"mock_tool_calls": [RISKY]}
    )
    message = answer.choices[0].message
    assert message.tool_calls is None and answer.choices[0].finish_reason == "stop"
    assert "No reviewer decided on the call to `delete_account` in time" in message.content
    assert "by a reviewer" not in message.content
    assert_closed_because_the_gateway_gave_up("wt-hold")


def test_a_held_stream_nobody_decides_closes_the_escalation_and_tells_the_model(client, make_key, mock):
    sdk = holding_client(client, make_key, "wt-hold-stream")
    text, calls, _, finishes = streamed(sdk, extra_body={"mock_tool_calls": [RISKY]})
    assert calls == {} and finishes == ["stop"]
    assert "No reviewer decided on the call to `delete_account` in time" in text and "by a reviewer" not in text
    assert_closed_because_the_gateway_gave_up("wt-hold-stream")
