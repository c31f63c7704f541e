"""Runs pages through the Django test client: list filters and paging, the run timeline (hops, a
waiting step), escaping of agent content, cancel and retry with their refusals, roles and 404."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Run, Step
from tests.fixtures.factories import make_run
from tests.fixtures.people import ALICE, BEA, CHARLIE, ERIN, ROOT, client_for

pytestmark = pytest.mark.django_db

XSS = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def reviewer(client, alice):
    """Alice, the cast's reviewer, signed in with the test client."""
    client.force_login(alice)
    return client


def run_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-run="(\d+)"', html)]


# --- list --------------------------------------------------------------------------------------
def test_list_shows_runs_newest_first_with_their_numbers(reviewer):
    old = make_run(input_tokens=120, output_tokens=30, cost_usd=Decimal("0.004200"))
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    new = make_run("research", Run.Status.RUNNING, finished_at=None)
    Step.objects.create(run=old, seq=1, kind="llm", name="planning", status="completed")
    Step.objects.create(run=old, seq=2, kind="tool", name="lookup_order", status="completed")

    response = reviewer.get("/runs/")
    html = response.content.decode()
    assert response.status_code == 200
    assert run_ids(html) == [new.pk, old.pk]
    row = html[html.index(f'<tr data-run="{old.pk}"') :].split("</tr>")[0]
    assert "support-refund" in row and "badge ok" in row and "Succeeded" in row
    assert ">2<" in row  # steps
    assert "120 / 30" in row and "$0.0042" in row and "3.0 s" in row
    assert 'ws-connect="/ws/live/runs/"' in html and "live:runs from:body" in html


def test_list_filters_by_agent_and_status_and_keeps_them_in_paging(reviewer):
    refund_ok = make_run("support-refund", Run.Status.SUCCEEDED)
    refund_failed = make_run("support-refund", Run.Status.FAILED)
    research_failed = make_run("research", Run.Status.FAILED)

    assert run_ids(reviewer.get("/runs/", {"agent": "support-refund"}).content.decode()) == [
        refund_failed.pk,
        refund_ok.pk,
    ]
    assert run_ids(reviewer.get("/runs/", {"status": "failed"}).content.decode()) == [
        research_failed.pk,
        refund_failed.pk,
    ]
    assert run_ids(reviewer.get("/runs/", {"agent": "research", "status": "failed"}).content.decode()) == [
        research_failed.pk
    ]
    # a value that is not a choice is reported, not applied, and never an error page
    bad = reviewer.get("/runs/", {"status": "exploded", "agent": "research"})
    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()
    assert run_ids(bad.content.decode()) == [research_failed.pk]


def test_list_pages_fifty_runs_and_htmx_gets_only_the_table(reviewer):
    agent = agent_actions.ensure_agent("research")
    Run.objects.bulk_create([Run(agent=agent, status="succeeded", input={"n": i}) for i in range(55)])
    make_run("support-refund")
    first = reviewer.get("/runs/", {"agent": "research"}).content.decode()
    assert len(run_ids(first)) == 50 and "Page 1 of 2" in first
    assert "agent=research&amp;page=2" in first  # the filter travels with the page link
    second = reviewer.get("/runs/", {"agent": "research", "page": 2}, headers={"HX-Request": "true"})
    html = second.content.decode()
    assert len(run_ids(html)) == 5
    assert html.lstrip().startswith('<section class="card" id="runs-table">') and "<html" not in html
    assert 'id="runs-page-number" name="page" value="2"' in html


# --- detail ------------------------------------------------------------------------------------
def make_timeline_run() -> Run:
    run = make_run(
        "support-refund",
        Run.Status.WAITING_HUMAN,
        finished_at=None,
        input={"question": "refund order 42", "note": XSS},
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        executions=2,
        active_seconds=4.25,
        input_tokens=300,
        output_tokens=80,
    )
    Step.objects.create(
        run=run,
        seq=1,
        kind="llm",
        name="planning",
        phase="planning",
        status="completed",
        attempts=3,
        executions=1,
        handler="backup",
        model="gpt-4o-mini",
        duration_ms=2150.0,
        input_tokens=300,
        output_tokens=80,
        cost_usd=Decimal("0.000123"),
        result={"text": "plan: look up, refund, email"},
        hops=[
            {
                "handler": "primary",
                "outcome": "failed",
                "target": "openai:gpt-4o",
                "error_class": "RateLimitError",
                "attempts": 2,
                "duration_ms": 1500.0,
                "reason": "max_retries",
                "waits": [10.0],
                "status": 429,
            },
            {"handler": "backup", "outcome": "ok", "target": "openai:gpt-4o-mini", "attempts": 1, "waits": []},
        ],
    )
    Step.objects.create(
        run=run, seq=2, kind="tool", name="lookup_order", status="completed", cache_hit=True, result={"total": 1250}
    )
    Step.objects.create(
        run=run,
        seq=3,
        kind="tool",
        name="refund",
        status="failed",
        attempts=1,
        error_class="ToolError",
        error=f"gateway said {XSS}",
    )
    Step.objects.create(
        run=run,
        seq=4,
        kind="tool",
        name="send_email",
        phase="tool_execution",
        status="waiting_human",
        escalation_id=99,
        arguments={
            "args": {"to": "ana@example.com", "body": XSS},
            "escalation": {
                "reason": "sensitive_operation",
                "priority": "high",
                "tool": "send_email",
                "arguments": {"to": "ana@example.com", "body": XSS},
                "value": None,
                "confidence": 0.93,
                "rule": "sensitive_operation",
                "side_effect": True,
            },
        },
    )
    return run


def test_detail_renders_the_header_and_a_timeline_with_hops_and_a_waiting_step(reviewer):
    run = make_timeline_run()
    response = reviewer.get(f"/runs/{run.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'ws-connect="/ws/live/run.{run.pk}/"' in html and f"live:run.{run.pk} from:body" in html
    for text in ("support-refund", "Waiting Human", "sess-1", "300 / 80", "4bf92f3577b34da6a3ce929d0e0e4736", "4.2 s"):
        assert text in html, text
    assert re.findall(r'<li class="step step-(\w+)" id="step-(\d+)"', html) == [
        ("completed", "1"),
        ("completed", "2"),
        ("failed", "3"),
        ("waiting_human", "4"),
    ]
    planning = html[html.index('id="step-1"') : html.index('id="step-2"')]
    assert "backup · gpt-4o-mini" in planning and "2.1 s" in planning and "$0.000123" in planning
    assert planning.count('<tr class="hop">') == 2
    assert (
        "RateLimitError" in planning and "max_retries" in planning and "10.0 s" in planning and "HTTP 429" in planning
    )
    assert "openai:gpt-4o-mini" in planning
    assert "cache hit" in html[html.index('id="step-2"') : html.index('id="step-3"')]
    failed = html[html.index('id="step-3"') : html.index('id="step-4"')]
    assert "ToolError" in failed and 'class="step-error" hx-disable' in failed
    waiting = html[html.index('id="step-4"') :]
    assert "needs a human" in waiting and "sensitive_operation" in waiting and "badge high" in waiting
    assert "Approve, modify or reject the call of tool <code>send_email</code> (it has side effects)" in waiting
    assert "confidence 0.93" in waiting
    # a waiting run can be cancelled, not retried
    assert f'hx-post="/runs/{run.pk}/cancel"' in html and f"/runs/{run.pk}/retry" not in html


def test_waiting_and_decided_steps_show_the_review_queue_escalation(reviewer):
    from review.models import Escalation

    run = make_run("support-refund", Run.Status.WAITING_HUMAN, finished_at=None)
    agent = run.agent
    someone = ERIN.user()
    decided = Escalation.objects.create(
        run=run,
        step_seq=1,
        agent=agent,
        kind="tool",
        operation="refund",
        arguments={"amount": 1250.0},
        value=1250.0,
        reason="high_value_decision",
        rule="high_value_decision",
        priority="high",
        deadline_at=timezone.now(),
        state="decided",
        decision="modified",
        final_arguments={"amount": 1000.0},
        decided_by=someone,
        comment=f"cap it {XSS}",
        reviewer_confidence=80,
    )
    waiting = Escalation.objects.create(
        run=run,
        step_seq=2,
        agent=agent,
        kind="llm",
        operation="response",
        context={"messages": [{"role": "user", "content": "where is my refund?"}]},
        reason="all_fallbacks_failed",
        priority="high",
        deadline_at=timezone.now() + timedelta(minutes=10),
        state="claimed",
        queue="experts",
        claimed_by=someone,
    )
    for seq, status, esc in ((1, "decided", decided), (2, "waiting_human", waiting)):
        Step.objects.create(
            run=run,
            seq=seq,
            kind=esc.kind,
            name=esc.operation,
            status=status,
            escalation_id=esc.pk,
            arguments={"escalation": {"id": esc.pk, "reason": esc.reason, "priority": esc.priority}},
            decision={"decision": "modified", "arguments": {"amount": 1000.0}} if status == "decided" else None,
        )
    html = reviewer.get(f"/runs/{run.pk}/").content.decode()
    first = html[html.index('id="step-1"') : html.index('id="step-2"')]
    assert "decided by a human" in first and "high_value_decision" in first
    by_erin = "by <span data-agent-content>erin</span>"  # names are agent data, marked for the language check
    assert f'<span class="badge ok">Modified</span> {by_erin}' in first and "confidence 80 %" in first
    assert "cap it &lt;script&gt;" in first and "&quot;amount&quot;: 1000.0" in first
    # step 2 waits in the expert queue: a reviewer sees that, not its messages (issue 14, item 11)
    second = html[html.index('id="step-2"') :]
    assert "needs a human" in second and "all_fallbacks_failed" in second
    assert "belongs to the expert queue" in second and "where is my refund?" not in second
    expert = client_for(ERIN)
    html = expert.get(f"/runs/{run.pk}/").content.decode()
    second = html[html.index('id="step-2"') :]
    assert "claimed by <span data-agent-content>erin</span> · expert queue · decide by" in second
    assert "Every fallback failed for operation <code>response</code>" in second
    assert "where is my refund?" in second


def test_agent_content_is_escaped_and_inside_hx_disable(reviewer):
    run = make_timeline_run()
    Run.objects.filter(pk=run.pk).update(status="failed", output={"answer": XSS}, error=XSS, error_class="Boom<b>")
    html = reviewer.get(f"/runs/{run.pk}/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "Boom<b>" not in html
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in html  # the error, as text
    assert "&lt;script&gt;alert(\\&quot;owned\\&quot;)&lt;/script&gt;" in html  # inside JSON (input, output)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # every <pre> with agent content sits in an hx-disable container, and no inline script or style
    assert html.count("<pre>") == html.count("<div hx-disable><pre>") + html.count('class="run-error" hx-disable')
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html


def test_live_fragment_is_header_and_timeline_only(reviewer):
    run = make_timeline_run()
    html = reviewer.get(f"/runs/{run.pk}/live").content.decode()
    assert html.lstrip().startswith('<section class="card run-header" id="run-header"')
    assert 'id="run-timeline"' in html and "<html" not in html and "ws-connect" not in html


# --- actions -----------------------------------------------------------------------------------
def test_cancel_a_queued_run_and_refuse_a_finished_one(reviewer):
    queued = make_run(status=Run.Status.QUEUED, started_at=None)
    response = reviewer.post(f"/runs/{queued.pk}/cancel", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert f"Run {queued.pk} was cancelled." in response.content.decode()
    assert response["HX-Trigger"] == f"live:run.{queued.pk}"
    assert Run.objects.get(pk=queued.pk).status == "cancelled"

    again = reviewer.post(f"/runs/{queued.pk}/cancel", headers={"HX-Request": "true"})
    assert again.status_code == 409  # htmx swaps 409 bodies (responseHandling in base.html)
    refusal = again.content.decode()
    assert 'class="error"' in refusal and "already ended (Cancelled)" in refusal and "nothing to cancel" in refusal
    assert again["HX-Trigger"] == f"live:run.{queued.pk}"
    assert "nothing to cancel" not in reviewer.get(f"/runs/{queued.pk}/notices").content.decode()  # shown once


def test_cancel_a_running_run_asks_its_worker(reviewer):
    running = make_run(status=Run.Status.RUNNING, finished_at=None, lease_owner="w1")
    response = reviewer.post(f"/runs/{running.pk}/cancel", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "stops before the next step" in response.content.decode()
    run = Run.objects.get(pk=running.pk)
    assert run.status == "running" and run.cancel_requested
    html = reviewer.get(f"/runs/{running.pk}/").content.decode()
    assert "cancel requested" in html and f"/runs/{running.pk}/cancel" not in html


def test_retry_a_failed_run_from_its_checkpoint(reviewer):
    failed = make_run(status=Run.Status.FAILED, error="boom", error_class="ToolError")
    Step.objects.create(run=failed, seq=1, kind="llm", name="planning", status="completed")
    assert f'hx-post="/runs/{failed.pk}/retry"' in reviewer.get(f"/runs/{failed.pk}/").content.decode()

    response = reviewer.post(f"/runs/{failed.pk}/retry", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "completed steps replay" in response.content.decode()
    run = Run.objects.get(pk=failed.pk)
    assert run.status == "queued" and run.error == "" and run.steps.get(seq=1).status == "completed"


def test_retry_of_a_run_that_did_not_fail_is_refused_with_a_message(reviewer):
    done = make_run(status=Run.Status.SUCCEEDED)
    refused = reviewer.post(f"/runs/{done.pk}/retry", headers={"HX-Request": "true"})
    assert refused.status_code == 409
    assert "only a failed run can be retried" in refused.content.decode()
    # without htmx the run page itself answers, 409, with the refusal in the messages
    page = reviewer.post(f"/runs/{done.pk}/retry")
    html = page.content.decode()
    assert page.status_code == 409
    assert '<li class="error">Retry refused: only a failed run can be retried' in html and 'id="run-timeline"' in html
    assert Run.objects.get(pk=done.pk).status == "succeeded"


def test_plain_form_post_redirects_back_to_the_run(reviewer):
    queued = make_run(status=Run.Status.QUEUED, started_at=None)
    response = reviewer.post(f"/runs/{queued.pk}/cancel", follow=True)
    assert response.redirect_chain == [(f"/runs/{queued.pk}/", 302)]
    assert f"Run {queued.pk} was cancelled." in response.content.decode()


def test_actions_need_post_and_an_existing_run(reviewer):
    run = make_run(status=Run.Status.FAILED)
    assert reviewer.get(f"/runs/{run.pk}/retry").status_code == 405
    assert reviewer.post("/runs/999999/retry").status_code == 404
    assert reviewer.post("/runs/999999/cancel").status_code == 404


# --- access ------------------------------------------------------------------------------------
def test_unknown_run_is_a_404_page(reviewer):
    response = reviewer.get("/runs/999999/")
    assert response.status_code == 404 and "Not found" in response.content.decode()
    assert reviewer.get("/runs/999999/live").status_code == 404


@pytest.mark.parametrize(
    ("person", "status"),
    [(ALICE, 200), (ERIN, 200), (ROOT, 200), (BEA, 403), (CHARLIE, 403)],
    ids=["reviewer", "expert", "superuser", "budget admin", "no role"],
)
def test_roles_that_may_open_runs(client, person, status):
    client.force_login(person.user())
    run = make_run(status=Run.Status.FAILED)
    assert client.get("/runs/").status_code == status
    assert client.get(f"/runs/{run.pk}/").status_code == status
    assert client.post(f"/runs/{run.pk}/retry").status_code == (302 if status == 200 else 403)
    if status == 403:
        assert Run.objects.get(pk=run.pk).status == "failed"


def test_anonymous_is_sent_to_login(client):
    response = client.get("/runs/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
