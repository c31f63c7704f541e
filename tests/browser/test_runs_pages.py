"""Chromium: a reviewer filters the runs list, opens a run and watches its timeline change live."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agentops.lib import live
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step
from review.models import Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import make_run
from tests.fixtures.people import ALICE

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
REFUSAL_CONSOLE = re.compile(r"409|responseError")


def seed_runs() -> dict[str, Run]:
    refund = agent_actions.ensure_agent("support-refund", description="refunds with approval")
    research = agent_actions.ensure_agent("research", description="search and summarise")
    now = timezone.now()

    def run(agent, status, minutes_ago, **fields):
        created = now - timedelta(minutes=minutes_ago)
        started = created + timedelta(seconds=1) if status != "queued" else None
        finished = started + timedelta(seconds=7.5) if status in Run.TERMINAL else None
        obj = make_run(
            agent,
            status,
            started_at=started,
            finished_at=finished,
            input=fields.pop("input", {"question": f"{agent.name} task {minutes_ago}"}),
            session_id=fields.pop("session_id", f"sess-{minutes_ago}"),
            **fields,
        )
        Run.objects.filter(pk=obj.pk).update(created_at=created)
        return obj

    runs = {
        "old_ok": run(refund, "succeeded", 50, input_tokens=812, output_tokens=230, cost_usd=Decimal("0.0061")),
        "research_ok": run(research, "succeeded", 40, input_tokens=2400, output_tokens=1400, cost_usd=Decimal("0.031")),
        "research_failed": run(
            research,
            "failed",
            30,
            error_class="FallbackExhausted",
            error="every handler failed",
            input_tokens=900,
            output_tokens=0,
        ),
        "to_cancel": run(refund, "running", 20, lease_owner="w-gone"),
        "queued": run(research, "queued", 10),
        "live": run(
            refund,
            "running",
            5,
            input={"order": 42, "note": XSS},
            session_id="sess-live",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            executions=1,
            input_tokens=350,
            output_tokens=120,
            cost_usd=Decimal("0.00123"),
        ),
    }
    live_run = runs["live"]
    Step.objects.create(
        run=live_run,
        seq=1,
        kind="llm",
        name="planning",
        phase="planning",
        status="completed",
        attempts=3,
        executions=1,
        handler="backup",
        model="gpt-4o-mini",
        duration_ms=2310.0,
        input_tokens=350,
        output_tokens=120,
        cost_usd=Decimal("0.00123"),
        result={"plan": ["look up order", "refund", "email the customer", "answer"], "note": XSS},
        hops=[
            {
                "handler": "primary",
                "outcome": "failed",
                "target": "simulated:gpt-4o",
                "error_class": "RateLimitError",
                "attempts": 2,
                "duration_ms": 1800.0,
                "reason": "max_retries",
                "waits": [1.0],
                "status": 429,
            },
            {
                "handler": "backup",
                "outcome": "ok",
                "target": "simulated:gpt-4o-mini",
                "attempts": 1,
                "duration_ms": 510.0,
            },
        ],
    )
    Step.objects.create(
        run=live_run,
        seq=2,
        kind="tool",
        name="lookup_order",
        phase="tool_search",
        status="completed",
        executions=1,
        attempts=1,
        cache_hit=True,
        duration_ms=12.0,
        arguments={"args": {"order": 42}},
        result={"order": 42, "total": 1250.0, "customer": "ana@example.com"},
    )
    return runs


def rows(page):
    return page.locator("#runs-table tbody tr")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_reviewer_filters_runs_and_watches_a_run_timeline_live(web, page, alice):
    base = web.extra["url"]
    runs = seed_runs()
    dialogs: list[str] = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        if dialog.message.startswith("Cancel run"):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    login(page, base, ALICE)

    # --- the list, newest first, filtered with the filters kept in the URL ---------------------------
    page.goto(base + "/runs/")
    expect(rows(page)).to_have_count(6)
    assert rows(page).first.get_attribute("data-run") == str(runs["live"].pk)
    page.select_option("#id_agent", "research")
    expect(rows(page)).to_have_count(3)
    expect(page).to_have_url(re.compile(r"agent=research"))
    page.select_option("#id_status", "failed")
    expect(rows(page)).to_have_count(1)
    expect(page).to_have_url(re.compile(r"agent=research&status=failed"))
    assert rows(page).first.get_attribute("data-run") == str(runs["research_failed"].pk)
    page.reload()  # the URL alone restores the filtered view
    expect(rows(page)).to_have_count(1)
    assert page.input_value("#id_status") == "failed"
    page.select_option("#id_agent", "")
    page.select_option("#id_status", "")
    expect(rows(page)).to_have_count(6)

    # --- the list follows `runs` events without a reload ---------------------------------------------
    page.wait_for_timeout(500)  # let the socket join its group (a missed event is reconciled on open anyway)
    queued = runs["queued"]
    Run.objects.filter(pk=queued.pk).update(status="running", started_at=timezone.now())
    live.send_now("runs", "run.changed", {"run": queued.pk, "status": "running"}, wait=True)
    expect(page.locator(f'tr[data-run="{queued.pk}"] .badge').first).to_have_text("Running")
    lifecycle.cancel_run(runs["to_cancel"].pk)  # running: the action asks its worker and publishes after commit
    expect(page.locator(f'tr[data-run="{runs["to_cancel"].pk}"]')).to_contain_text("cancelling")
    screenshot(page, "runs-list")

    # --- one run: header and timeline --------------------------------------------------------------
    run = runs["live"]
    page.click(f'tr[data-run="{run.pk}"] a')
    expect(page).to_have_url(f"{base}/runs/{run.pk}/")
    expect(page.locator("#run-timeline li.step")).to_have_count(2)
    expect(page.locator("#run-status")).to_have_text("Running")
    expect(page.locator("#step-1 tr.hop")).to_have_count(2)
    expect(page.locator("#step-1")).to_contain_text("RateLimitError")
    expect(page.locator("#step-2")).to_contain_text("cache hit")
    # agent content is text: the payload's markup never becomes elements
    page.click(f"#run-{run.pk}-input summary")
    expect(page.locator(f"#run-{run.pk}-input pre")).to_contain_text("<script>alert(2)</script>")
    assert page.locator("#run-page pre img, #run-page pre script").count() == 0
    page.evaluate("window.__sameDocument = true")

    # --- a step needing a human and the run suspending appear live ----------------------------------
    page.wait_for_timeout(300)
    email = {"to": "ana@example.com", "body": "Your refund of $1250 is on its way."}
    escalation = Escalation.objects.create(
        run=run,
        step_seq=3,
        agent=run.agent,
        kind="tool",
        operation="send_email",
        arguments=email,
        confidence=0.91,
        reason="sensitive_operation",
        rule="sensitive_operation",
        priority="high",
        deadline_at=timezone.now() + timedelta(minutes=10),
    )
    Step.objects.create(
        run=run,
        seq=3,
        kind="tool",
        name="send_email",
        phase="tool_execution",
        status="waiting_human",
        escalation_id=escalation.pk,
        arguments={
            "args": email,
            "escalation": {"id": escalation.pk, "reason": "sensitive_operation", "priority": "high"},
        },
    )
    live.send_now(f"run.{run.pk}", "step.changed", {"run": run.pk, "seq": 3, "status": "waiting_human"}, wait=True)
    Run.objects.filter(pk=run.pk).update(status="waiting_human", active_seconds=3.4, lease_owner="")
    live.send_now(f"run.{run.pk}", "run.changed", {"run": run.pk, "status": "waiting_human"}, wait=True)
    expect(page.locator("#run-timeline li.step")).to_have_count(3)
    expect(page.locator("#step-3 .escalation")).to_contain_text("needs a human")
    expect(page.locator("#step-3 .escalation")).to_contain_text("send_email")
    expect(page.locator("#run-status")).to_have_text("Waiting Human")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.locator(f"#run-{run.pk}-input").get_attribute("open") is not None  # the reader's view survived
    screenshot(page, "run-timeline")
    assert page.console_errors == [], page.console_errors

    # --- cancel from the page ------------------------------------------------------------------------
    page.click("#run-cancel")
    expect(page.locator("#run-notices")).to_contain_text(f"Run {run.pk} was cancelled.")
    expect(page.locator("#run-status")).to_have_text("Cancelled")
    expect(page.locator("#run-cancel")).to_have_count(0)
    assert Run.objects.get(pk=run.pk).status == "cancelled"
    assert dialogs == [f"Cancel run {run.pk}?"]  # the confirmation, and no alert() from agent content
    assert page.console_errors == []

    # --- a refused retry shows why (the page was stale: the run succeeded meanwhile, no event seen) ----
    failed = runs["research_failed"]

    def is_live(response):
        return response.url.endswith(f"/runs/{failed.pk}/live")

    # the page reconciles once its socket opens: an immediate re-read, then the settling one 1.2 s later
    with page.expect_response(is_live), page.expect_response(is_live):
        page.goto(f"{base}/runs/{failed.pk}/")
    expect(page.locator("#run-retry")).to_be_visible()
    expect(page.locator("#run-header .run-error")).to_contain_text("FallbackExhausted")
    Run.objects.filter(pk=failed.pk).update(status="succeeded", error="", error_class="")
    page.click("#run-retry")
    expect(page.locator("#run-notices .error")).to_contain_text("only a failed run can be retried")
    expect(page.locator("#run-retry")).to_have_count(0)  # the header re-read the run
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    # the 409 is reported by Chromium and htmx; nothing else (no CSP violation) may appear
    assert page.console_errors and all(REFUSAL_CONSOLE.search(text) for text in page.console_errors), (
        page.console_errors
    )
