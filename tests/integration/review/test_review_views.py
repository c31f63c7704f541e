"""Review pages through the Django test client: queue order, filters and roles; the approval screen
(agent content escaped inside hx-disable, claim on open); the five actions through review.actions;
validation (422 keeping the text) and conflicts (409 with the reason, keeping what was typed)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.utils import timezone

from agentops.config import actions as config_actions
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Run, Step
from review import actions as review
from review.models import AuditEvent, Escalation, EscalationPolicy
from tests.fixtures.factories import make_escalation
from tests.fixtures.people import ALICE, BEA, BOB, ERIN, ROOT, Person, client_for

pytestmark = pytest.mark.django_db

XSS = '<script>alert(1)</script><img src=x onerror=alert(1)><a href="javascript:alert(1)">x</a>'
HX = '<div hx-get="/admin/" hx-trigger="load">hx</div>'


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # sign-ins are not the subject


def login(client, person: Person):
    client.force_login(person.user())
    return client


# In this module alice and bob are the cast's two reviewers signed in, each with their own test client.
@pytest.fixture
def alice(client):
    return login(client, ALICE)


@pytest.fixture
def bob(db):
    return client_for(BOB)


def aged(escalation: Escalation, minutes: float) -> Escalation:
    Escalation.objects.filter(pk=escalation.pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
    return escalation


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-escalation="(\d+)"', html)]


def fresh(escalation: Escalation) -> Escalation:
    return Escalation.objects.select_related("claimed_by", "decided_by").get(pk=escalation.pk)


class DisabledRegions(HTMLParser):
    """Collects text and attribute values that contain `marker` and whether an hx-disable element
    encloses them (or carries them)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, marker: str):
        super().__init__(convert_charrefs=True)
        self.marker = marker
        self.stack: list[tuple[str, bool]] = []
        self.outside: list[str] = []
        self.inside = 0
        self.tags: list[str] = []
        self.suspicious: list[str] = []

    def _disabled(self) -> bool:
        return any(flag for _, flag in self.stack)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        disabled = any(name == "hx-disable" for name, _ in attrs)
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.suspicious.append(f"<{tag} {name}={value!r}>")
            if name == "hx-get" and value == "/admin/":
                self.suspicious.append(f"<{tag} {name}={value!r}>")
        ours = ("/static/", "/jsi18n/")  # page scripts, and the words they show (Django's JavaScriptCatalog)
        if tag == "script" and not any(name == "src" and (value or "").startswith(ours) for name, value in attrs):
            self.suspicious.append("<script> without our src")
        for name, value in attrs:
            if value and self.marker in value:
                if self._disabled() or disabled:
                    self.inside += 1
                else:
                    self.outside.append(f"<{tag} {name}={value[:80]!r}>")
        if tag not in self.VOID:
            self.stack.append((tag, disabled))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self.marker in data:
            if self._disabled():
                self.inside += 1
            else:
                self.outside.append(data[:120])


def assert_inert(html: str, marker: str = "alert(1)") -> DisabledRegions:
    parser = DisabledRegions(marker)
    parser.feed(html)
    assert parser.outside == [], f"agent content outside hx-disable: {parser.outside}"
    assert parser.inside > 0
    # no element came from agent content: no handlers, no javascript: URLs, no images, only our scripts
    assert parser.suspicious == []
    assert "img" not in parser.tags
    return parser


# --- the queue ---------------------------------------------------------------------------------
def test_queue_orders_by_priority_then_age_and_shows_open_items_only(alice):
    low = aged(make_escalation(reason="max_retries_exceeded", priority="low", operation="lookup"), 30)
    high_new = aged(make_escalation(), 1)
    medium = aged(make_escalation(reason="low_confidence", priority="medium", operation="lookup"), 20)
    high_old = aged(make_escalation(), 10)
    decided = make_escalation()
    review.decide(decided.pk, BOB.user(), "approved")

    response = alice.get("/review/")
    html = response.content.decode()
    assert response.status_code == 200
    assert row_ids(html) == [high_old.pk, high_new.pk, medium.pk, low.pk]
    assert f'data-decided="{decided.pk}"' in html  # the recently decided list
    assert 'ws-connect="/ws/live/review.queue/"' in html and "live:review.queue from:body" in html
    assert 'src="/static/js/review.js"' in html
    row = html[html.index(f'<tr data-escalation="{high_old.pk}"') :].split("</tr>")[0]
    assert "badge high" in row and "Sensitive Operation" in row and "send_note" in row and "t-approval" in row
    assert "ana@example.com" in row  # the arguments summary
    assert "data-deadline=" in row and re.search(r">\s*(9|10):\d\d<", row)  # the SLA countdown
    assert "10 min" in row  # age
    assert 'name="version" value="' in row and 'value="approve"' in row and 'value="reject"' in row


def test_queue_filters_by_reason_agent_and_priority(alice):
    refund = make_escalation(agent="support-refund")
    research = make_escalation(agent="research", reason="low_confidence", priority="medium", operation="search")
    budget = make_escalation(agent="research", reason="budget_exceeded", priority="high", operation="planning")

    def ids(**params):
        return row_ids(alice.get("/review/", params).content.decode())

    assert ids(agent="support-refund") == [refund.pk]
    assert ids(agent="research") == [budget.pk, research.pk]
    assert ids(reason="low_confidence") == [research.pk]
    assert ids(priority="high", agent="research") == [budget.pk]
    assert ids(priority="bogus") == [refund.pk, budget.pk, research.pk]  # a bad value is not applied
    # htmx (filters, live refreshes) gets the fragment only
    fragment = alice.get("/review/", {"agent": "research"}, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="queue-live"') and "<html" not in fragment
    assert row_ids(fragment) == [budget.pk, research.pk]


def test_expert_queue_is_for_experts_and_superusers(client):
    reviewer_item = make_escalation()
    expert_item = make_escalation(operation="send_refund")
    review.escalate_to_expert(expert_item.pk, None, comment="deadline passed", system=True)

    login(client, ALICE)
    assert row_ids(client.get("/review/").content.decode()) == [reviewer_item.pk]
    assert client.get("/review/", {"queue": "experts"}).status_code == 403
    assert client.get(f"/review/{expert_item.pk}/").status_code == 403

    login(client, ERIN)
    html = client.get("/review/").content.decode()
    assert row_ids(html) == [expert_item.pk] and 'ws-connect="/ws/live/review.experts/"' in html
    assert row_ids(client.get("/review/", {"queue": "all"}).content.decode()) == [reviewer_item.pk, expert_item.pk]
    assert client.get(f"/review/{expert_item.pk}/").status_code == 200

    login(client, ROOT)
    assert set(row_ids(client.get("/review/").content.decode())) == {reviewer_item.pk, expert_item.pk}


def test_roles_guard_every_review_page(client):
    escalation = make_escalation()
    assert client.get("/review/").status_code == 302  # to the login page
    login(client, BEA)
    assert client.get("/review/").status_code == 403
    assert client.get(f"/review/{escalation.pk}/").status_code == 403
    assert client.post(f"/review/{escalation.pk}/decide", {"action": "approve", "version": 0}).status_code == 403
    assert client.post(f"/review/{escalation.pk}/claim").status_code == 403
    assert fresh(escalation).state == "pending"
    assert client.get("/review/999999/").status_code == 403  # the role check comes first
    login(client, ALICE)
    assert client.get("/review/999999/").status_code == 404
    assert client.get(f"/review/{escalation.pk}/decide").status_code == 405


# --- the approval screen -----------------------------------------------------------------------
def test_approval_screen_shows_everything_escaped_inside_hx_disable_and_claims(alice):
    agent = agent_actions.ensure_agent("t-approval")
    run = Run.objects.create(
        agent=agent,
        status="waiting_human",
        input={"question": XSS, "hx": HX},
        output=None,
        input_tokens=321,
        output_tokens=45,
        cost_usd="0.004321",
        session_id=f"sess-{XSS}",
    )
    Step.objects.create(run=run, seq=1, kind="tool", name="t_echo", status="completed", result={"echo": XSS})
    Step.objects.create(run=run, seq=2, kind="tool", name="send_note", status="waiting_human")
    escalation = make_escalation(
        run=run,
        step_seq=2,
        operation=f"send_{XSS}"[:100],
        arguments={
            "to": XSS,
            "hx": HX,
            "md": "![x](http://127.0.0.1:1/x)",
            "rtl": "abc\u202efdp.exe",
            "zw": "a\u200bb",
        },
        context={
            "user_input": XSS,
            "agent_analysis": f"analysis {XSS} {HX}",
            "suggestions": [f"suggest {XSS}", {"do": XSS}],
            "extra": {"why": XSS},
        },
        rule=f"rule {XSS}",
        session_id=f"sess-{XSS}",
        confidence=0.42,
    )

    response = alice.get(f"/review/{escalation.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    parser = assert_inert(html)
    assert parser.inside >= 8  # operation, arguments, textarea, user input, analysis, suggestions, run, rule
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\u202e" in html and "\u202e" not in html and "\u200b" not in html  # made visible
    assert "42 %" in html and 'value="42"' in html  # the agent's confidence
    assert "Sensitive Operation" in html and "rule &lt;script&gt;" in html  # why it escalated
    assert f'href="/runs/{run.pk}/"' in html and "321 / 45" in html and "$0.004321" in html
    assert 'id="run-timeline"' in html and 'data-seq="2"' in html  # the run's timeline so far
    # the five actions, comment, confidence slider, version for the exactly-once update
    for action in ("approve", "modify", "take_over", "escalate", "reject"):
        assert f'name="action" value="{action}"' in html
    assert 'type="range"' in html and 'name="comment"' in html
    # opening it claimed it for alice
    escalation = fresh(escalation)
    assert escalation.state == "claimed" and escalation.claimed_by.username == "alice"
    assert f'name="version" value="{escalation.version}"' in html
    assert "claimed by you" in html and 'id="release-button"' in html
    assert [e.event for e in AuditEvent.objects.filter(escalation=escalation)] == ["created", "claimed"]
    # the modify textarea holds the complete proposed arguments as editable JSON
    textarea = re.search(r'<textarea name="arguments"[^>]*>(.*?)</textarea>', html, re.S).group(1)
    import html as htmllib

    assert json.loads(htmllib.unescape(textarea))["rtl"] == "abc\u202efdp.exe"


def test_second_reviewer_sees_who_holds_the_item(alice, bob):
    escalation = make_escalation()
    alice.get(f"/review/{escalation.pk}/")
    html = bob.get(f"/review/{escalation.pk}/").content.decode()
    assert "alice is working on this item right now." in html and "alice is working on this" in html
    assert fresh(escalation).claimed_by.username == "alice"


def test_live_fragment_has_status_and_audit_log_but_never_the_form(alice):
    escalation = make_escalation()
    alice.get(f"/review/{escalation.pk}/")
    fragment = alice.get(f"/review/{escalation.pk}/live", headers={"HX-Request": "true"}).content.decode()
    assert 'id="escalation-status"' in fragment and 'id="audit-log" hx-swap-oob="true"' in fragment
    assert "decision-form" not in fragment and "<html" not in fragment


def test_decided_item_shows_the_decision_without_a_form(alice):
    escalation = make_escalation()
    review.decide(escalation.pk, BOB.user(), "modified", arguments={"to": "bo@example.com"}, comment="wrong address")
    html = alice.get(f"/review/{escalation.pk}/").content.decode()
    assert "decision-form" not in html and "by <span data-agent-content>bob</span>" in html and "wrong address" in html
    assert "diff-changed" in html and "diff-removed" in html  # to changed, body removed
    assert fresh(escalation).state == "decided"  # opening it did not claim it


# --- decisions ---------------------------------------------------------------------------------
def post(client, escalation, action, **fields):
    data = {"action": action, "version": fresh(escalation).version, "confidence": 70, **fields}
    return client.post(f"/review/{escalation.pk}/decide", data)


def test_approve_goes_through_the_action_and_resumes_the_run(alice):
    agent = agent_actions.ensure_agent("t-approval")
    run = Run.objects.create(agent=agent, status="waiting_human", input={"to": "ana"})
    Step.objects.create(run=run, seq=1, kind="tool", name="send_note", status="waiting_human")
    escalation = make_escalation(run=run, step_seq=1)
    alice.get(f"/review/{escalation.pk}/")

    response = post(alice, escalation, "approve", comment="looks right")
    assert response.status_code == 302 and response["Location"] == "/review/"
    escalation = fresh(escalation)
    assert (escalation.state, escalation.decision, escalation.decided_by.username) == ("decided", "approved", "alice")
    assert escalation.comment == "looks right" and escalation.reviewer_confidence == 70
    step = Step.objects.get(run=run, seq=1)
    assert step.status == "decided" and step.decision["decision"] == "approved"
    assert Run.objects.get(pk=run.pk).status == "queued"  # handed back to a worker
    queue = alice.get("/review/").content.decode()
    assert f"Approved: escalation {escalation.pk}; run {run.pk} resumes." in queue


def test_htmx_decision_redirects_the_browser_to_the_queue(alice):
    escalation = make_escalation()
    response = alice.post(
        f"/review/{escalation.pk}/decide",
        {"action": "reject", "version": fresh(escalation).version, "confidence": 90, "comment": "no"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and response["HX-Redirect"] == "/review/"
    escalation = fresh(escalation)
    assert (escalation.decision, escalation.comment, escalation.reviewer_confidence) == ("rejected", "no", 90)


def test_modify_validates_the_json_and_keeps_the_text(alice):
    escalation = make_escalation()
    broken = '{"to": "bo@example.com", "body": <b>oops</b>'
    response = post(alice, escalation, "modify", arguments=broken, comment="fixing the address")
    html = response.content.decode()
    assert response.status_code == 422
    assert "Not valid JSON" in html
    assert "{&quot;to&quot;: &quot;bo@example.com&quot;, &quot;body&quot;: &lt;b&gt;oops&lt;/b&gt;" in html
    assert "fixing the address</textarea>" in html
    assert fresh(escalation).state == "pending"

    response = post(alice, escalation, "modify", arguments='["not", "an", "object"]')
    assert response.status_code == 422 and "must be a JSON object, not an array" in response.content.decode()
    response = post(alice, escalation, "modify", arguments="   ")
    assert response.status_code == 422

    # htmx gets the decision panel only, with the same message
    response = alice.post(
        f"/review/{escalation.pk}/decide",
        {"action": "modify", "version": fresh(escalation).version, "confidence": 50, "arguments": "{"},
        headers={"HX-Request": "true"},
    )
    fragment = response.content.decode()
    assert response.status_code == 422 and fragment.lstrip().startswith('<section class="card" id="decision">')
    assert "Not valid JSON" in fragment

    response = post(alice, escalation, "modify", arguments='{"to": "bo@example.com", "body": "refund issued", "cc": 1}')
    assert response.status_code == 302
    escalation = fresh(escalation)
    assert escalation.decision == "modified"
    assert escalation.final_arguments == {"to": "bo@example.com", "body": "refund issued", "cc": 1}


def test_take_over_accepts_json_or_plain_text(alice):
    first, second = make_escalation(), make_escalation()
    assert post(alice, first, "take_over", result='{"sent_by_hand": true}').status_code == 302
    assert fresh(first).decision == "taken_over" and fresh(first).result == {"sent_by_hand": True}
    assert post(alice, second, "take_over", result="I phoned the customer.").status_code == 302
    assert fresh(second).result == "I phoned the customer."
    third = make_escalation()
    response = post(alice, third, "take_over", result="  ")
    assert response.status_code == 422 and "Write the result" in response.content.decode()


def test_escalate_moves_the_item_to_the_expert_queue(alice, client):
    escalation = make_escalation()
    alice.get(f"/review/{escalation.pk}/")
    response = post(alice, escalation, "escalate", comment="needs legal")
    assert response.status_code == 302
    escalation = fresh(escalation)
    assert escalation.queue == "experts" and escalation.state == "pending" and escalation.claimed_by is None
    assert AuditEvent.objects.filter(escalation=escalation, event="escalated_to_expert").get().data["comment"] == (
        "needs legal"
    )
    assert alice.get(f"/review/{escalation.pk}/").status_code == 403  # now an expert's item
    assert row_ids(alice.get("/review/").content.decode()) == []


def test_reject_with_comment_and_confidence(alice):
    escalation = make_escalation()
    assert post(alice, escalation, "reject", comment="wrong customer", confidence=95).status_code == 302
    escalation = fresh(escalation)
    assert (escalation.decision, escalation.comment, escalation.reviewer_confidence) == (
        "rejected",
        "wrong customer",
        95,
    )


def test_bad_action_or_confidence_is_422(alice):
    escalation = make_escalation()
    assert post(alice, escalation, "delete_everything").status_code == 422
    assert post(alice, escalation, "approve", confidence=101).status_code == 422
    assert alice.post(f"/review/{escalation.pk}/decide", {"action": "approve"}).status_code == 422  # no version
    assert fresh(escalation).state == "pending"


# --- conflicts ---------------------------------------------------------------------------------
def test_conflict_when_someone_else_holds_the_item_keeps_what_was_typed(alice, bob):
    escalation = make_escalation()
    alice.get(f"/review/{escalation.pk}/")
    bob.get(f"/review/{escalation.pk}/")  # alice holds it; bob may still try
    response = post(bob, escalation, "reject", comment="bob's <careful> reasoning", confidence=33)
    html = response.content.decode()
    assert response.status_code == 409
    assert "alice is working on this item right now." in html
    assert "bob&#x27;s &lt;careful&gt; reasoning</textarea>" in html and 'value="33"' in html
    assert fresh(escalation).state == "claimed"


def test_conflict_after_someone_else_decided(alice, bob):
    escalation = make_escalation()
    version = fresh(escalation).version
    bob.get("/review/")  # bob opened the queue, alice decides first
    assert post(alice, escalation, "approve").status_code == 302
    response = bob.post(
        f"/review/{escalation.pk}/decide",
        {"action": "modify", "version": version, "confidence": 60, "arguments": '{"to": "x"}', "comment": "mine"},
        headers={"HX-Request": "true"},
    )
    fragment = response.content.decode()
    assert response.status_code == 409
    assert "Already decided (approved) by alice. Your input was not applied." in fragment
    assert "mine</textarea>" in fragment and "{&quot;to&quot;: &quot;x&quot;}</textarea>" in fragment
    assert "review:refresh" in response["HX-Trigger"]
    assert fresh(escalation).decision == "approved"


def test_stale_version_is_refused(db):
    """Erin (an expert) opened the item while it was the reviewers'; the deadline moved it to the expert queue
    meanwhile: what her form shows is not the item any more."""
    erin = client_for(ERIN)
    escalation = make_escalation()
    stale = fresh(escalation).version
    review.escalate_to_expert(escalation.pk, None, comment="deadline passed", system=True)
    response = erin.post(
        f"/review/{escalation.pk}/decide", {"action": "approve", "version": stale, "confidence": 50, "comment": "c"}
    )
    assert response.status_code == 409 and "changed meanwhile" in response.content.decode()
    assert fresh(escalation).state == "pending"


def test_a_claim_and_a_release_leave_a_form_valid(alice, bob):
    """Bob looking at the item (claim, then leaving: release) is not a change of the item."""
    escalation = make_escalation()
    seen = fresh(escalation).version
    bob.get(f"/review/{escalation.pk}/")
    bob.post(f"/review/{escalation.pk}/release")
    response = alice.post(
        f"/review/{escalation.pk}/decide", {"action": "approve", "version": seen, "confidence": 50, "comment": "c"}
    )
    assert response.status_code == 302 and fresh(escalation).decision == "approved"


def test_quick_decisions_from_the_queue_answer_a_notice(alice, bob):
    escalation, held = make_escalation(), make_escalation()
    bob.get(f"/review/{held.pk}/")
    response = alice.post(
        f"/review/{escalation.pk}/decide",
        {"action": "approve", "version": fresh(escalation).version, "source": "queue"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and "review:refresh" in response["HX-Trigger"]
    assert f"Approved: escalation {escalation.pk}." in response.content.decode()
    assert fresh(escalation).decision == "approved" and fresh(escalation).reviewer_confidence is None

    response = alice.post(
        f"/review/{held.pk}/decide",
        {"action": "reject", "version": fresh(held).version, "source": "queue"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 409 and "bob is working on this item right now." in response.content.decode()
    assert fresh(held).state == "claimed"


# --- claim and release -------------------------------------------------------------------------
def test_claim_renewal_answers_the_new_lease_out_of_band_and_leaves_the_version(alice):
    escalation = make_escalation()
    page = alice.get(f"/review/{escalation.pk}/").content.decode()
    before = fresh(escalation)
    assert f'<input type="hidden" name="lease" value="{before.lease}" id="beacon-lease">' in page
    response = alice.post(f"/review/{escalation.pk}/claim", headers={"HX-Request": "true"})
    fragment = response.content.decode()
    renewed = fresh(escalation)
    assert response.status_code == 200 and renewed.version == before.version and renewed.lease > before.lease
    assert (
        f'<input type="hidden" name="lease" value="{renewed.lease}" id="beacon-lease" hx-swap-oob="true">' in fragment
    )


def test_release_gives_the_item_back_and_the_beacon_only_releases_an_unchanged_lease(alice):
    escalation = make_escalation()
    alice.get(f"/review/{escalation.pk}/")
    lease = fresh(escalation).lease
    # a reload claimed again meanwhile: the old page's beacon leaves the item alone
    alice.get(f"/review/{escalation.pk}/")
    response = alice.post(f"/review/{escalation.pk}/release", {"beacon": "1", "lease": lease})
    assert response.status_code == 204 and fresh(escalation).state == "claimed"
    for odd in ({}, {"lease": ""}, {"lease": "yesterday"}, {"lease": "2026-01-01T00:00:00"}, {"lease": "\x00" * 9}):
        response = alice.post(f"/review/{escalation.pk}/release", {"beacon": "1", **odd})
        assert response.status_code == 204 and fresh(escalation).state == "claimed"  # a beacon names its lease
    response = alice.post(f"/review/{escalation.pk}/release", {"beacon": "1", "lease": fresh(escalation).lease})
    assert response.status_code == 204 and fresh(escalation).state == "pending"

    alice.get(f"/review/{escalation.pk}/")
    response = alice.post(f"/review/{escalation.pk}/release", headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == "/review/" and fresh(escalation).state == "pending"


# --- admin -------------------------------------------------------------------------------------
def test_policy_admin_saves_through_the_action(client, monkeypatch):
    saved = []
    original = config_actions.save_runtime_object
    monkeypatch.setattr(
        config_actions, "save_runtime_object", lambda obj, actor=None: saved.append(obj) or original(obj)
    )
    login(client, ROOT)
    response = client.post(
        "/admin/review/escalationpolicy/add/",
        {
            "operation": "send_note",
            "enabled": "on",
            "low_confidence_below": "0.8",
            "high_value_above": "500",
            "max_retries": "2",
            "sensitive_prefixes": "send",
            "deadline_seconds": "120",
            "priority_sensitive_operation": "medium",
            "priority_high_value_decision": "high",
            "priority_low_confidence": "medium",
            "priority_max_retries_exceeded": "low",
            "priority_all_fallbacks_failed": "high",
            "priority_budget_exceeded": "high",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = EscalationPolicy.objects.get(operation="send_note")
    assert saved == [policy] and policy.deadline_seconds == 120
    assert client.get("/admin/review/escalation/").status_code == 200


def test_llm_handoff_offers_take_over_and_reject_only(alice):
    escalation = make_escalation(
        kind="llm",
        operation="planning",
        reason="all_fallbacks_failed",
        arguments={},
        context={"user_input": "plan it", "messages": [{"role": "user", "content": "plan it"}], "hops": []},
    )
    html = alice.get(f"/review/{escalation.pk}/").content.decode()
    assert 'value="approve"' not in html and 'value="modify"' not in html
    assert 'value="take_over"' in html and 'value="reject"' in html and "The answer (plain text)" in html
    assert (
        "Messages of the request" in html
        and "<li><strong data-agent-content>user</strong><pre>plan it</pre></li>" in html
    )
    queue = alice.get("/review/").content.decode()
    row = queue[queue.index(f'<tr data-escalation="{escalation.pk}"') :]
    assert 'value="approve"' not in row[: row.index("</tr>")]  # no quick approve on its row either

    response = post(alice, escalation, "approve")
    assert response.status_code == 422 and "no proposed action to approve" in response.content.decode()
    assert post(alice, escalation, "take_over", result='{"plan": 1}').status_code == 302
    assert fresh(escalation).result == '{"plan": 1}'  # the answer stays text
