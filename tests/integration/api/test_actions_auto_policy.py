"""Policy rows applied from suggestions answer POST /api/v1/actions at once, through the real uvicorn server
(another process: it picks the new row up within about a second through the runtime config's version bump):
auto-approve below the value limit (above it, the rules escalate as before), auto-reject always — each answer
naming the policy row — and undoing the change brings the reviewers back."""

from __future__ import annotations

import httpx
import pytest

from review import policy_actions
from review.models import ActionRequest, EscalationPolicy
from tests.fixtures.factories import make_decisions
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = "t-agent"


@pytest.fixture
def client(make_key, api) -> httpx.Client:
    return api(make_key(AGENT, scopes=["actions"]))


def ask(client: httpx.Client, **body) -> dict:
    response = client.post("/actions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_an_applied_auto_approve_answers_below_the_limit_and_escalates_above(client, alice, root):
    escalations = make_decisions("a" * 20, reviewer=alice, agent=AGENT, operation="send_refund", values=[480.0] * 20)
    agent = escalations[0].agent
    change = policy_actions.apply_suggestion(agent.pk, "send_refund", "approve", root, below=490.0, decisions=20)
    row = EscalationPolicy.objects.get(pk=change.policy_id)

    answer = wait_for(
        lambda: (
            (a := ask(client, operation="send_refund", arguments={"amount": 480}, value=480))["status"] == "approved"
            and a
        ),
        timeout=10,
        interval=0.3,
        message="the web process to apply the new policy row",
    )
    assert (answer["reason"], answer["escalation_id"], answer["arguments"]) == ("auto_approved", None, {"amount": 480})
    assert answer["rule"] == f"auto-approve: value 480 < 490 · policy #{row.pk} (t-agent/send_refund)"
    assert answer["comment"] == f"approved at once by the policy: {answer['rule']}"
    assert ActionRequest.objects.get(pk=answer["id"]).status == "approved"

    above = ask(client, operation="send_refund", arguments={"amount": 490}, value=490)
    assert (above["status"], above["reason"]) == ("pending", "sensitive_operation") and above["escalation_id"]
    assert ask(client, operation="send_refund")["status"] == "pending"  # no value: the rules decide

    policy_actions.undo(change.pk, root)
    wait_for(
        lambda: ask(client, operation="send_refund", value=10)["status"] == "pending",
        timeout=10,
        interval=0.3,
        message="the undo to reach the web process",
    )


def test_an_applied_auto_reject_rejects_at_once_naming_the_row(client, alice, root):
    escalations = make_decisions("r" * 20, reviewer=alice, agent=AGENT, operation="delete_account")
    change = policy_actions.apply_suggestion(
        escalations[0].agent_id, "delete_account", "reject", root, below=None, decisions=20
    )
    answer = wait_for(
        lambda: (a := ask(client, operation="delete_account", arguments={"id": 7}))["status"] == "rejected" and a,
        timeout=10,
        interval=0.3,
        message="the web process to apply the new policy row",
    )
    assert (answer["reason"], answer["escalation_id"], answer["arguments"]) == ("auto_rejected", None, None)
    assert answer["rule"] == f"auto-reject · policy #{change.policy_id} (t-agent/delete_account)"
    assert answer["decision"]["comment"] == f"rejected at once by the policy: {answer['rule']}"
    again = client.get(f"/actions/{answer['id']}").json()
    assert again["status"] == "rejected" and again["comment"] == answer["comment"]
    assert ask(client, operation="delete_account", value=0.01)["status"] == "rejected"  # whatever the value

    # Leave the web process as the next test expects it: no auto-reject row in its cache.
    policy_actions.undo(change.pk, root)
    wait_for(
        lambda: ask(client, operation="delete_account")["status"] == "pending",
        timeout=10,
        interval=0.3,
        message="the undo to reach the web process",
    )
