"""Decisions are accepted exactly once: two reviewers racing on the same item (real threads, each with its
own database connection), claims with leases, versions, the audit log; and the decision data (JSONL
export, per agent + operation stats) built from them."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import F
from django.test import AsyncRequestFactory, RequestFactory
from django.utils import timezone

from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review.actions import DecisionConflict
from review.models import AuditEvent, Escalation
from tests.fixtures.factories import make_escalation
from tests.fixtures.people import CHARLIE
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db(transaction=True)

TRIALS = 100


@pytest.fixture
def defaults(redis_client):
    reseed_runtime()
    config_source().invalidate()


@pytest.fixture
def people(defaults, alice, bob, erin):
    """The cast's two reviewers racing for items, and the expert."""
    return alice, bob, erin


@pytest.fixture
def agent(defaults):
    return agent_actions.ensure_agent("t-approval")


def events(escalation) -> list[tuple[str, str | None]]:
    return [
        (e.event, e.actor.username if e.actor else None)
        for e in AuditEvent.objects.filter(escalation=escalation).select_related("actor")
    ]


# --- exactly once under a race ------------------------------------------------------------------
def test_two_reviewers_racing_decide_exactly_one_decision_each_time(people, agent):
    alice, bob, _ = people
    winners: dict[str, int] = {"alice": 0, "bob": 0}

    for trial in range(TRIALS):
        escalation = make_escalation(agent, session_id=f"trial-{trial}")
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def reviewer(user, decision, escalation=escalation, barrier=barrier, outcomes=outcomes):
            try:
                barrier.wait(timeout=10)
                outcomes[user.username] = review.decide(
                    escalation.pk,
                    user,
                    decision,
                    comment=f"{user.username} says {decision}",
                    confidence=80,
                    version=escalation.version,
                )
            except DecisionConflict as conflict:
                outcomes[user.username] = conflict
            except Exception as exc:  # anything else is a failure of the test, reported below
                outcomes[user.username] = RuntimeError(repr(exc))
            finally:
                connection.close()  # every thread has its own connection; do not leak it

        threads = [
            threading.Thread(target=reviewer, args=(alice, "approved")),
            threading.Thread(target=reviewer, args=(bob, "rejected")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        decided = {name: o for name, o in outcomes.items() if isinstance(o, Escalation)}
        conflicts = {name: o for name, o in outcomes.items() if isinstance(o, DecisionConflict)}
        assert len(decided) == 1 and len(conflicts) == 1, f"trial {trial}: {outcomes}"
        (winner,) = decided
        (loser,) = conflicts
        winners[winner] += 1
        expected = "approved" if winner == "alice" else "rejected"
        assert f"Already decided ({expected}) by {winner}" in str(conflicts[loser])
        assert "not applied" in str(conflicts[loser])

        row = Escalation.objects.select_related("decided_by").get(pk=escalation.pk)
        assert row.state == "decided" and row.decision == expected and row.decided_by.username == winner
        assert row.comment == f"{winner} says {expected}" and row.version == escalation.version + 1
        assert [e for e in events(row) if e[0] == "decided"] == [("decided", winner)]
    assert sum(winners.values()) == TRIALS


def test_racing_claims_give_the_item_to_one_reviewer(people, agent):
    alice, bob, _ = people
    for _ in range(20):
        escalation = make_escalation(agent)
        barrier = threading.Barrier(2)
        outcomes = {}

        def claim(user, escalation=escalation, barrier=barrier, outcomes=outcomes):
            try:
                barrier.wait(timeout=10)
                outcomes[user.username] = review.claim(escalation.pk, user)
            except DecisionConflict as conflict:
                outcomes[user.username] = conflict
            finally:
                connection.close()

        threads = [threading.Thread(target=claim, args=(user,)) for user in (alice, bob)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        holders = [name for name, o in outcomes.items() if isinstance(o, Escalation)]
        assert len(holders) == 1, outcomes
        other = "bob" if holders[0] == "alice" else "alice"
        assert f"{holders[0]} is working on this item right now" in str(outcomes[other])
        assert Escalation.objects.get(pk=escalation.pk).claimed_by.username == holders[0]


# --- claims ---------------------------------------------------------------------------------------
def test_a_claim_keeps_a_second_reviewer_out(people, agent):
    alice, bob, _ = people
    escalation = make_escalation(agent)
    claimed = review.claim(escalation.pk, alice)
    assert claimed.state == "claimed" and claimed.claimed_by == alice
    remaining = (claimed.claim_expires_at - timezone.now()).total_seconds()
    assert review.CLAIM_SECONDS - 5 < remaining <= review.CLAIM_SECONDS

    for attempt in (
        lambda: review.claim(escalation.pk, bob),
        lambda: review.decide(escalation.pk, bob, "approved"),
        lambda: review.decide(escalation.pk, bob, "rejected", version=claimed.version),
        lambda: review.escalate_to_expert(escalation.pk, bob, comment="not mine"),
    ):
        with pytest.raises(DecisionConflict, match="alice is working on this item right now"):
            attempt()
    assert review.release(escalation.pk, bob).claimed_by == alice  # only the holder releases

    row = Escalation.objects.get(pk=escalation.pk)
    assert (row.state, row.claimed_by_id, row.decision, row.version) == ("claimed", alice.pk, "", claimed.version)

    renewed = review.claim(escalation.pk, alice)  # renewing one's own claim: a new lease, the same item
    assert renewed.version == claimed.version == escalation.version
    assert renewed.claim_expires_at > claimed.claim_expires_at
    decided = review.decide(escalation.pk, alice, "approved", version=renewed.version, comment="fine", confidence=90)
    assert (decided.state, decided.decision, decided.decided_by, decided.claimed_by) == (
        "decided",
        "approved",
        alice,
        None,
    )


def test_a_released_item_can_be_claimed_by_someone_else(people, agent):
    alice, bob, _ = people
    escalation = make_escalation(agent)
    review.claim(escalation.pk, alice)
    released = review.release(escalation.pk, alice)
    assert (released.state, released.claimed_by, released.claim_expires_at) == ("pending", None, None)
    assert review.claim(escalation.pk, bob).claimed_by == bob


def test_an_expired_claim_can_be_taken_or_decided_over(people, agent):
    alice, bob, _ = people
    escalation = make_escalation(agent)
    review.claim(escalation.pk, alice)
    Escalation.objects.filter(pk=escalation.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))

    taken = review.claim(escalation.pk, bob)
    assert taken.claimed_by == bob and taken.claim_expires_at > timezone.now()
    with pytest.raises(DecisionConflict, match="bob is working"):
        review.decide(escalation.pk, alice, "approved")

    # an expired claim does not block a decision either, even without claiming first
    Escalation.objects.filter(pk=escalation.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    decided = review.decide(escalation.pk, alice, "rejected", comment="stale claim")
    assert decided.decision == "rejected" and decided.decided_by == alice


def test_a_stale_version_is_refused_and_keeps_the_item_open(people, agent):
    _, bob, erin = people
    escalation = make_escalation(agent)
    seen = escalation.version
    review.claim(escalation.pk, bob)
    review.release(escalation.pk, bob)  # bob looked at it: who looks is not a change of the item
    assert Escalation.objects.get(pk=escalation.pk).version == seen
    review.escalate_to_expert(escalation.pk, None, comment="deadline passed", system=True)  # this is a change
    with pytest.raises(DecisionConflict, match="changed meanwhile"):
        review.decide(escalation.pk, erin, "approved", version=seen)
    row = Escalation.objects.get(pk=escalation.pk)
    assert row.state == "pending" and row.decision == "" and row.version == seen + 1
    assert review.decide(escalation.pk, erin, "approved", version=row.version).decision == "approved"
    with pytest.raises(DecisionConflict, match=r"Already decided \(approved\) by erin"):
        review.decide(escalation.pk, bob, "rejected", version=row.version + 1)
    with pytest.raises(DecisionConflict, match="Already decided"):
        review.claim(escalation.pk, bob)


def test_bad_decisions_are_refused_before_touching_the_item(people, agent):
    alice, _, _ = people
    escalation = make_escalation(agent)
    with pytest.raises(ValueError, match="unknown decision"):
        review.decide(escalation.pk, alice, "maybe")
    with pytest.raises(ValueError, match="JSON object"):
        review.decide(escalation.pk, alice, "modified", arguments=["not", "an", "object"])
    row = Escalation.objects.get(pk=escalation.pk)
    assert row.state == "pending" and row.version == escalation.version and events(row) == [("created", None)]


def test_an_expert_can_decide_an_escalated_item(people, agent):
    alice, _, erin = people
    escalation = make_escalation(agent)
    review.claim(escalation.pk, alice)
    moved = review.escalate_to_expert(escalation.pk, alice, comment="needs legal")
    assert (moved.queue, moved.state, moved.claimed_by) == ("experts", "pending", None)
    assert moved.escalated_at is not None and moved.deadline_at > timezone.now() + timedelta(seconds=590)
    decided = review.decide(escalation.pk, erin, "modified", arguments={"to": "legal@example.com"})
    assert decided.final_arguments == {"to": "legal@example.com"} and decided.queue == "experts"


def test_the_audit_log_has_every_event_with_its_actor(people, agent):
    alice, bob, erin = people
    escalation = make_escalation(agent)
    review.claim(escalation.pk, alice)
    with pytest.raises(DecisionConflict):
        review.claim(escalation.pk, bob)  # refused attempts change nothing and are not events
    review.release(escalation.pk, alice)
    review.claim(escalation.pk, bob)
    review.escalate_to_expert(escalation.pk, bob, comment="above my pay grade")
    review.claim(escalation.pk, erin)
    review.decide(
        escalation.pk, erin, "modified", arguments={"to": "ana@example.org"}, comment="typo in address", confidence=70
    )
    with pytest.raises(DecisionConflict):
        review.decide(escalation.pk, alice, "approved")

    assert events(escalation) == [
        ("created", None),
        ("claimed", "alice"),
        ("released", "alice"),
        ("claimed", "bob"),
        ("escalated_to_expert", "bob"),
        ("claimed", "erin"),
        ("decided", "erin"),
    ]
    log = list(AuditEvent.objects.filter(escalation=escalation))
    assert log[0].data == {"reason": "sensitive_operation", "priority": "high", "rule": escalation.rule}
    assert log[4].data == {"comment": "above my pay grade", "automatic": False}
    assert log[-1].data == {
        "decision": "modified",
        "comment": "typo in address",
        "confidence": 70,
        "arguments": {"to": "ana@example.org"},
        "channel": "web",
    }
    stamps = [e.created_at for e in log]
    assert stamps == sorted(stamps) and all(stamps)


# --- decision data: export and stats ------------------------------------------------------------
def decided_set(people, agent):
    """Five finished escalations of two operations, one still open, one expired."""
    alice, bob, _ = people
    other = agent_actions.ensure_agent("t-other")
    made = []
    e = make_escalation(agent)
    made.append(review.decide(e.pk, alice, "approved", comment="ok", confidence=95))
    e = make_escalation(agent)
    made.append(review.decide(e.pk, bob, "modified", arguments={"to": "x@example.org"}, confidence=60))
    e = make_escalation(agent)
    made.append(review.decide(e.pk, alice, "rejected", comment="no"))
    e = make_escalation(agent, operation="delete_account", arguments={"id": 7})
    made.append(review.decide(e.pk, bob, "taken_over", result={"deleted": False, "why": "kept"}))
    e = make_escalation(other, operation="send_note")
    made.append(review.decide(e.pk, alice, "approved"))
    make_escalation(agent)  # still open: not exported
    expired = make_escalation(agent)
    Escalation.objects.filter(pk=expired.pk).update(
        state="expired", decision="rejected", decided_at=timezone.now(), escalated_at=timezone.now()
    )
    return made, expired


def export_lines(response) -> list[dict]:
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in body.splitlines()]


def test_export_has_one_line_per_finished_escalation(people, agent):
    from review.data_views import export_decisions

    made, expired = decided_set(people, agent)
    request = RequestFactory().get("/review/export")
    request.user = people[0]
    lines = export_lines(export_decisions(request))
    assert [line["escalation"] for line in lines] == sorted([e.pk for e in made] + [expired.pk])
    by_id = {line["escalation"]: line for line in lines}

    approved = by_id[made[0].pk]
    assert approved["decision"] == "approved" and approved["reviewer"] == "alice"
    assert approved["comment"] == "ok" and approved["reviewer_confidence"] == 95
    assert approved["proposed"]["arguments"] == {"to": "ana@example.com", "body": "refund issued"}
    assert approved["final"]["operation"] == "send_note"
    assert approved["final"]["arguments"] == approved["proposed"]["arguments"]
    assert approved["context"]["user_input"] == "please refund order 42"
    assert approved["reason"] == "sensitive_operation" and approved["rule"].startswith("operation name has the word")
    assert approved["agent"] == "t-approval" and approved["proposed"]["confidence"] == 0.9
    assert approved["created_at"] and approved["decided_at"] and approved["decision_seconds"] >= 0

    modified = by_id[made[1].pk]
    assert modified["final"]["arguments"] == {"to": "x@example.org"} and modified["arguments_changed"] is True
    rejected = by_id[made[2].pk]
    assert rejected["final"] == {"operation": None, "arguments": None, "result": None}
    taken = by_id[made[3].pk]
    assert taken["final"]["result"] == {"deleted": False, "why": "kept"} and taken["operation"] == "delete_account"
    gone = by_id[expired.pk]
    assert gone["expired"] is True and gone["decision"] == "rejected" and gone["reviewer"] is None


def test_export_filters_by_agent_and_date_and_streams_under_asgi(people, agent):
    from review import data_views, presenters

    made, _ = decided_set(people, agent)
    request = RequestFactory().get("/review/export", {"agent": "t-other"})
    request.user = people[1]
    assert [line["escalation"] for line in export_lines(data_views.export_decisions(request))] == [made[4].pk]

    today = timezone.localdate()
    for since, until, count in [(today, today, 6), (today + timedelta(days=1), None, 0), (None, today, 6)]:
        params = {k: v.isoformat() for k, v in {"since": since, "until": until}.items() if v}
        request = RequestFactory().get("/review/export", params)
        request.user = people[0]
        assert len(export_lines(data_views.export_decisions(request))) == count, params
    Escalation.objects.filter(pk=made[0].pk).update(decided_at=timezone.now() - timedelta(days=3))
    request = RequestFactory().get("/review/export", {"until": (today - timedelta(days=2)).isoformat()})
    request.user = people[0]
    assert [line["escalation"] for line in export_lines(data_views.export_decisions(request))] == [made[0].pk]

    bad = RequestFactory().get("/review/export", {"since": "yesterday"})
    bad.user = people[0]
    assert data_views.export_decisions(bad).status_code == 400
    bad = RequestFactory().get("/review/export", {"agent": "nobody"})
    bad.user = people[0]
    assert data_views.export_decisions(bad).status_code == 400

    # under ASGI the body is an async iterator read page by page
    export_chunk = presenters.EXPORT_CHUNK
    presenters.EXPORT_CHUNK = 2
    try:
        request = AsyncRequestFactory().get("/review/export")
        request.user = people[0]
        response = data_views.export_decisions(request)
        assert response.is_async

        async def collect():
            try:
                return [chunk async for chunk in response.streaming_content]
            finally:  # the pages were read in asgiref's thread-sensitive thread: close its connection
                await sync_to_async(lambda: connection.close())()

        chunks = asyncio.run(collect())
    finally:
        presenters.EXPORT_CHUNK = export_chunk
    assert len(chunks) == 3  # six rows in pages of two
    assert len(b"".join(chunks).decode().splitlines()) == 6


def test_decision_data_needs_the_queue_role(people, agent):
    from review.data_views import decision_stats, export_decisions

    nobody = CHARLIE.user()
    for view in (export_decisions, decision_stats):
        request = RequestFactory().get("/review/x")
        request.user = nobody
        with pytest.raises(PermissionDenied):
            view(request)
        request.user = AnonymousUser()
        assert view(request).status_code == 302
        request = RequestFactory().post("/review/x")
        request.user = people[0]
        assert view(request).status_code == 405


def test_stats_per_agent_and_operation(people, agent):
    from review.data_views import decision_stats
    from review.presenters import decision_stats_rows

    decided_set(people, agent)
    e = make_escalation(agent)
    review.decide(e.pk, people[0], "approved")
    rows = {(r.agent, r.operation): r for r in decision_stats_rows({}, people[2])}
    assert set(rows) == {("t-approval", "send_note"), ("t-approval", "delete_account"), ("t-other", "send_note")}
    send = rows[("t-approval", "send_note")]
    # approved, modified, rejected, approved by humans; one expired
    assert (send.count, send.decided, send.expired, send.approved) == (5, 4, 1, 3)
    assert send.approval.label == "75 %" and send.approval.meter == "0.7500"
    assert send.modification.label == "25 %" and send.rejection.label == "25 %" and send.take_over.label == "0 %"
    assert send.median_seconds is not None and send.median_seconds >= 0 and send.volume_meter == "1.0000"
    delete = rows[("t-approval", "delete_account")]
    assert (delete.count, delete.take_over.label, delete.approval.label) == (1, "100 %", "0 %")
    assert rows[("t-other", "send_note")].approval.label == "100 %"

    Escalation.objects.filter(agent=agent, state="decided", operation="send_note").update(
        decided_at=F("created_at") + timedelta(seconds=10)
    )
    send = {(r.agent, r.operation): r for r in decision_stats_rows({"agent": agent}, people[2])}[
        ("t-approval", "send_note")
    ]
    assert send.median_seconds == pytest.approx(10, abs=0.01) and send.median_label == "10.0 s"

    request = RequestFactory().get("/review/stats")
    request.user = people[0]
    html = decision_stats(request).content.decode()
    assert 'data-agent="t-approval" data-operation="send_note"' in html
    assert '<meter class="duration" min="0" max="1" low="0.5" high="0.8" optimum="1" value="0.7500">' in html
    assert "style=" not in html and "<script>" not in html
    request = RequestFactory().get("/review/stats", {"since": "2026-02-01", "until": "2026-01-01"})
    request.user = people[0]
    response = decision_stats(request)
    assert response.status_code == 400 and "is after" in response.content.decode()


def test_agent_supplied_text_is_escaped_in_the_stats(people, agent):
    from review.data_views import decision_stats

    e = make_escalation(agent, operation='send_<img src=x onerror="alert(1)">')
    review.decide(e.pk, people[0], "approved")
    request = RequestFactory().get("/review/stats")
    request.user = people[0]
    html = decision_stats(request).content.decode()
    assert "<img src=x" not in html and "send_&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
