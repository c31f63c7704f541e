"""Bulk approve / reject of selected queue rows and "assign to me / to a reviewer" (issue 18, item 3), through the
pages (Django test client) and review.bulk: every item decided once with its own audit event (channel bulk);
what changed, is held by someone else, was decided elsewhere, has nothing to approve or is the experts' is
skipped and reported; the size limit; two reviewers bulk-approving overlapping selections at once; the
assignment's audit, permissions and expert-only rule."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review import bulk
from review.models import AuditEvent, Escalation
from tests.fixtures.factories import make_escalation
from tests.fixtures.people import ALICE, BOB, CHARLIE, ERIN, client_for

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def cast(alice, bob, erin, charlie):
    """alice and bob are the cast's reviewers, erin the expert, charlie has no role."""
    return {"alice": alice, "bob": bob, "erin": erin, "charlie": charlie}


def items(count: int, **overrides) -> list[Escalation]:
    agent = agent_actions.ensure_agent("t-approval")
    return [make_escalation(agent, session_id=f"bulk-{i}", **overrides) for i in range(count)]


def llm_item() -> Escalation:
    return make_escalation(
        operation="planning", kind="llm", reason="all_fallbacks_failed", arguments={}, session_id="llm"
    )


def picks(*escalations: Escalation) -> list[str]:
    return [f"{e.pk}:{e.version}" for e in escalations]


def decided_events(escalation: Escalation) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(escalation=escalation, event="decided").select_related("actor"))


def fresh(escalation: Escalation) -> Escalation:
    return Escalation.objects.select_related("decided_by", "assigned_to").get(pk=escalation.pk)


# --- bulk decisions ------------------------------------------------------------------------------
def test_confirm_lists_what_will_happen_and_decide_decides_each_once_with_its_own_audit_event(cast):
    routine = items(4)
    other = make_escalation(operation="delete_file", arguments={"path": "/tmp/x"}, session_id="other")
    alice = client_for(ALICE)

    confirm = alice.post("/review/bulk/confirm", {"action": "approve", "pick": picks(*routine, other)}, **HTMX)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Approve 5 escalations?" in html and "5 selected." in html
    assert re.search(r"<code>send_note</code> × 4", html) and re.search(r"<code>delete_file</code> × 1", html)
    assert "will be skipped" not in html
    assert all(fresh(e).state == "pending" for e in (*routine, other))  # the confirmation decides nothing

    answer = alice.post(
        "/review/bulk/decide", {"action": "approve", "pick": picks(*routine, other), "comment": "routine"}, **HTMX
    )
    assert answer.status_code == 200
    assert "5 approved." in answer.content.decode()
    assert "review:refresh" in answer["HX-Trigger"] and "review:bulk-done" in answer["HX-Trigger"]
    for escalation in (*routine, other):
        row = fresh(escalation)
        assert (row.state, row.decision, row.decided_by.username, row.comment) == (
            "decided",
            "approved",
            "alice",
            "routine",
        )
        (event,) = decided_events(escalation)
        assert event.actor.username == "alice" and event.data["channel"] == "bulk"
        assert event.data["decision"] == "approved"


def test_reject_needs_no_comment_and_takes_llm_items_that_approve_skips(cast):
    tool, llm = items(1)[0], llm_item()
    alice = client_for(ALICE)

    confirm = alice.post("/review/bulk/confirm", {"action": "approve", "pick": picks(tool, llm)}, **HTMX)
    html = confirm.content.decode()
    assert "Approve 1 escalation?" in html and "1 will be skipped:" in html
    assert "1 cannot be approved: an LLM call proposes nothing to approve" in html
    answer = alice.post("/review/bulk/decide", {"action": "approve", "pick": picks(tool, llm)}, **HTMX)
    text = answer.content.decode()
    assert "1 approved, 1 skipped:" in text and f'data-skipped="{llm.pk}"' in text
    assert "proposes nothing to approve" in text
    assert fresh(tool).decision == "approved" and fresh(llm).state == "pending"

    answer = alice.post("/review/bulk/decide", {"action": "reject", "pick": picks(fresh(llm))}, **HTMX)
    assert "1 rejected." in answer.content.decode()
    assert fresh(llm).decision == "rejected" and fresh(llm).comment == ""
    assert decided_events(llm)[0].data["channel"] == "bulk"


def test_claimed_and_decided_elsewhere_are_skipped_with_the_reason(cast):
    looked_at, held, gone, fine = items(4)
    shown = picks(looked_at, held, gone, fine)  # the versions alice saw
    review.claim(looked_at.pk, cast["bob"])
    review.release(looked_at.pk, cast["bob"])  # bob opened it and left: still the item alice selected
    review.claim(held.pk, cast["bob"])
    review.decide(gone.pk, cast["bob"], "rejected", comment="bob was first")
    alice = client_for(ALICE)

    confirm = alice.post("/review/bulk/confirm", {"action": "approve", "pick": shown}, **HTMX).content.decode()
    assert "Approve 2 escalations?" in confirm and "2 will be skipped:" in confirm
    assert "1 is claimed by bob." in confirm
    assert "1 changed or was decided since you selected it." in confirm

    text = alice.post("/review/bulk/decide", {"action": "approve", "pick": shown}, **HTMX).content.decode()
    assert "2 approved, 2 skipped:" in text
    assert re.search(rf'data-skipped="{held.pk}".*bob is working on this item right now', text, re.S)
    assert re.search(rf'data-skipped="{gone.pk}".*Already decided \(rejected\) by bob', text, re.S)
    assert fresh(fine).decision == fresh(looked_at).decision == "approved"
    assert fresh(held).state == "claimed"
    assert fresh(gone).decision == "rejected" and len(decided_events(gone)) == 1


def test_a_reviewer_cannot_bulk_decide_expert_items(cast):
    mine, theirs = items(2)
    review.escalate_to_expert(theirs.pk, cast["bob"], comment="needs an expert")
    theirs = fresh(theirs)
    alice = client_for(ALICE)

    confirm = alice.post("/review/bulk/confirm", {"action": "reject", "pick": picks(mine, theirs)}, **HTMX)
    html = confirm.content.decode()
    assert "1 is not in your queue." in html and "send_note" in html
    text = alice.post("/review/bulk/decide", {"action": "reject", "pick": picks(mine, theirs)}, **HTMX).content
    assert f'data-skipped="{theirs.pk}"' in text.decode() and "not in your queue" in text.decode()
    assert fresh(theirs).state == "pending" and fresh(mine).decision == "rejected"

    erin = client_for(ERIN)
    text = erin.post("/review/bulk/decide", {"action": "reject", "pick": picks(theirs)}, **HTMX).content.decode()
    assert "1 rejected." in text and fresh(theirs).decided_by.username == "erin"


def test_the_number_of_items_is_bounded_and_bad_selections_are_4xx(cast):
    first = items(1)[0]
    too_many = [f"{first.pk + i}:0" for i in range(bulk.MAX_ITEMS + 1)]
    alice = client_for(ALICE)
    for path in ("/review/bulk/confirm", "/review/bulk/decide"):
        answer = alice.post(path, {"action": "approve", "pick": too_many}, **HTMX)
        assert answer.status_code == 422
        assert f"{bulk.MAX_ITEMS + 1} items selected: one bulk decision takes at most {bulk.MAX_ITEMS}" in (
            answer.content.decode()
        )
    assert fresh(first).state == "pending"
    for data in (
        {"action": "approve"},
        {"action": "approve", "pick": ["12:x"]},
        {"action": "approve", "pick": ["<script>"]},
        {"action": "modify", "pick": picks(first)},
    ):
        answer = alice.post("/review/bulk/decide", data, **HTMX)
        assert answer.status_code == 422, data
    assert (
        "Select at least one escalation first."
        in alice.post("/review/bulk/confirm", {"action": "reject"}).content.decode()
    )
    assert alice.get("/review/bulk/decide").status_code == 405
    assert (
        client_for(CHARLIE).post("/review/bulk/decide", {"action": "approve", "pick": picks(first)}).status_code == 403
    )
    assert fresh(first).state == "pending"


def test_without_htmx_the_confirmation_is_a_page_and_the_report_a_message(cast):
    one = items(1)[0]
    alice = client_for(ALICE)
    page = alice.post("/review/bulk/confirm", {"action": "approve", "pick": picks(one)})
    assert page.status_code == 200 and b'id="bulk-page"' in page.content and b"Approve 1 escalation?" in page.content
    answer = alice.post("/review/bulk/decide", {"action": "approve", "pick": picks(one)}, follow=True)
    assert answer.redirect_chain[-1][0] == "/review/" and b"1 approved." in answer.content


def test_two_reviewers_bulk_approving_overlapping_selections_decide_every_item_exactly_once(cast):
    escalations = items(40)
    alice_picks = {e.pk: e.version for e in escalations[:28]}
    bob_picks = {e.pk: e.version for e in escalations[12:]}
    barrier = threading.Barrier(2)
    outcomes: dict[str, bulk.BulkOutcome] = {}

    def reviewer(user, chosen):
        try:
            barrier.wait(timeout=10)
            outcomes[user.username] = bulk.bulk_decide(user, chosen, "approved")
        finally:
            connection.close()  # each thread had its own

    threads = [
        threading.Thread(target=reviewer, args=(cast["alice"], alice_picks)),
        threading.Thread(target=reviewer, args=(cast["bob"], bob_picks)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    alice, bob = outcomes["alice"], outcomes["bob"]
    assert sorted(alice.decided + bob.decided) == sorted(e.pk for e in escalations)  # each once, none missing
    assert len(alice.decided) + len(alice.skipped) == 28 and len(bob.decided) + len(bob.skipped) == 28
    overlap = {e.pk for e in escalations[12:28]}
    assert {s.pk for s in alice.skipped} | {s.pk for s in bob.skipped} <= overlap
    for escalation in escalations:
        events = decided_events(escalation)
        assert len(events) == 1 and events[0].data["channel"] == "bulk"
        assert fresh(escalation).decided_by.username == events[0].actor.username


# --- assignment ----------------------------------------------------------------------------------
def test_assign_to_a_reviewer_is_audited_shown_and_does_not_claim(cast):
    escalation = items(1)[0]
    version = escalation.version
    alice = client_for(ALICE)

    answer = alice.post(f"/review/{escalation.pk}/assign", {"assignee": cast["bob"].pk}, **HTMX)
    assert answer.status_code == 200 and f"Escalation {escalation.pk} is assigned to bob." in answer.content.decode()
    row = fresh(escalation)
    assert row.assigned_to.username == "bob" and row.state == "pending" and row.version == version
    (event,) = AuditEvent.objects.filter(escalation=escalation, event="assigned").select_related("actor")
    assert event.actor.username == "alice" and event.data == {"assignee": "bob", "previous": None}

    queue = alice.get("/review/").content.decode()
    assert re.search(
        rf'data-escalation="{escalation.pk}".*?class="badge assignee-name" data-agent-content>bob<', queue, re.S
    )
    bob = client_for(BOB)
    detail = bob.get(f"/review/{escalation.pk}/").content.decode()
    assert re.search(r'id="assignee-name">you<', detail)
    assert "it is not a claim: anyone may still decide it" in detail

    # assigned to bob, and alice can still decide it (once bob's claim from opening it is gone)
    review.release(escalation.pk, cast["bob"])
    decided = review.decide(escalation.pk, cast["alice"], "approved", version=fresh(escalation).version)
    assert decided.decided_by.username == "alice" and decided.assigned_to.username == "bob"
    assert alice.post(f"/review/{escalation.pk}/assign", {"assignee": "me"}, **HTMX).status_code == 409


def test_assign_to_me_from_the_queue_and_unassign(cast):
    escalation = items(1)[0]
    alice = client_for(ALICE)
    answer = alice.post(f"/review/{escalation.pk}/assign", {"assignee": "me", "source": "queue"}, **HTMX)
    assert answer.status_code == 200 and 'id="queue-notice"' in answer.content.decode()
    assert "assigned to alice" in answer.content.decode()
    assert fresh(escalation).assigned_to.username == "alice"
    queue = alice.get("/review/").content.decode()
    assert re.search(rf'data-escalation="{escalation.pk}".*?assignee-name">you<.*?Unassign', queue, re.S)

    answer = alice.post(f"/review/{escalation.pk}/assign", {"assignee": "", "source": "queue"}, **HTMX)
    assert "nobody is assigned now" in answer.content.decode() and fresh(escalation).assigned_to is None
    events = AuditEvent.objects.filter(escalation=escalation, event="assigned").order_by("pk")
    assert [e.data for e in events] == [
        {"assignee": "alice", "previous": None},
        {"assignee": None, "previous": "alice"},
    ]


def test_assignment_permissions_and_expert_items_only_to_experts(cast):
    item, expert_item = items(2)
    review.assign(expert_item.pk, cast["alice"], cast["alice"])
    review.escalate_to_expert(expert_item.pk, cast["alice"], comment="hard one")
    assert fresh(expert_item).assigned_to is None  # a reviewer cannot see it any more: unassigned
    alice, erin = client_for(ALICE), client_for(ERIN)

    answer = alice.post(f"/review/{item.pk}/assign", {"assignee": cast["charlie"].pk}, **HTMX)
    assert answer.status_code == 422 and "charlie is not an active reviewer." in answer.content.decode()
    assert alice.post(f"/review/{item.pk}/assign", {"assignee": "999999"}, **HTMX).status_code == 422
    assert alice.post(f"/review/{item.pk}/assign", {"assignee": "bob; drop"}, **HTMX).status_code == 422
    assert fresh(item).assigned_to is None
    assert alice.post(f"/review/{expert_item.pk}/assign", {"assignee": "me"}, **HTMX).status_code == 403
    assert client_for(CHARLIE).post(f"/review/{item.pk}/assign", {"assignee": "me"}).status_code == 403

    answer = erin.post(f"/review/{expert_item.pk}/assign", {"assignee": cast["bob"].pk}, **HTMX)
    assert answer.status_code == 422 and "only an expert can take it" in answer.content.decode()
    assert erin.post(f"/review/{expert_item.pk}/assign", {"assignee": "me"}, **HTMX).status_code == 200
    assert fresh(expert_item).assigned_to.username == "erin"
    detail = erin.get(f"/review/{expert_item.pk}/").content.decode()
    options = re.findall(r'<option value="(\d+)"', detail[detail.index('id="assign-to"') :])
    assert str(cast["erin"].pk) in options and str(cast["alice"].pk) not in options


def test_the_confirmation_and_the_report_speak_chinese(cast):
    first, second = items(2)
    alice = client_for(ALICE)
    zh = {**HTMX, "HTTP_ACCEPT_LANGUAGE": "zh-hans"}
    confirm = alice.post("/review/bulk/confirm", {"action": "approve", "pick": picks(first, second)}, **zh)
    html = confirm.content.decode()
    assert "批准 2 个升级项？" in html and "已选择 2 项。" in html and "批准 2 项" in html
    report = alice.post("/review/bulk/decide", {"action": "approve", "pick": picks(first, second)}, **zh)
    assert "已批准 2 项。" in report.content.decode()
    queue = alice.get("/review/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "清除选择" in queue and "分配给" in queue
