"""A tool call the escalation policy rejects at once (an auto-reject policy row): ``ctx.tool`` raises
``ToolRejected`` without asking anyone or running the tool, journals the step as a policy rejection, and a
resumed run replays it as the same exception; a call the policy approves at once just runs."""

from __future__ import annotations

import pytest

from agentops.runtime.context import ToolRejected, Verdict, tool
from tests.fixtures.runtime import StepLog
from tests.unit.runtime.test_phases import context

RAN: list[dict] = []


@tool("unit_policy_refund", side_effect=True)
def refund_tool(args, idempotency_key=None):
    RAN.append(dict(args))
    return {"refunded": args.get("amount")}


class AutoDecide:
    """Rejects ``refused`` at once and approves everything else (as auto-approve / auto-reject rows do)."""

    def __init__(self, refused: str) -> None:
        self.refused = refused

    def evaluate(self, tool, args, *, value, confidence, retry_count):
        if tool == self.refused:
            return Verdict(
                False, "auto_rejected", rule="auto-reject · policy #4 (t-agent/unit_policy_refund)", reject=True
            )
        return Verdict(False, "auto_approved", rule="auto-approve, any value · policy #5")


@pytest.fixture(autouse=True)
def _clean():
    RAN.clear()


def test_an_auto_rejected_tool_call_raises_at_once_and_replays_the_same_way():
    journal = StepLog()
    ctx = context(journal=journal, policy=AutoDecide("unit_policy_refund"))
    with pytest.raises(ToolRejected) as raised:
        ctx.tool("unit_policy_refund", {"amount": 30})
    assert raised.value.by_policy and not raised.value.expired
    assert str(raised.value) == (
        "tool 'unit_policy_refund' was rejected at once by the escalation policy: "
        "auto-reject · policy #4 (t-agent/unit_policy_refund)"
    )
    assert RAN == [] and journal.escalations == []  # nobody asked, nothing ran
    step = journal.steps[1]
    assert (step["kind"], step["name"], step["status"]) == ("tool", "unit_policy_refund", "completed")
    assert step["result"]["rejected"] is True and step["result"]["by_policy"] is True

    resumed = context(journal=journal.resumed(), policy=AutoDecide("nothing"))  # the row was undone meanwhile
    with pytest.raises(ToolRejected, match="rejected at once by the escalation policy"):
        resumed.tool("unit_policy_refund", {"amount": 30})
    assert RAN == []  # the journal decides a replay, not today's policy


def test_an_auto_approved_tool_call_runs_without_a_human():
    journal = StepLog()
    ctx = context(journal=journal, policy=AutoDecide("nothing"))
    assert ctx.tool("unit_policy_refund", {"amount": 12}) == {"refunded": 12}
    assert RAN == [{"amount": 12}] and journal.escalations == []
