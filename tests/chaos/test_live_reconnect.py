"""The live review queue in Chromium across a Redis restart: the socket reconnects and the page reconciles.

A reviewer has the queue open. Redis (the channel layer) is stopped: the page's WebSocket drops. An escalation
is opened while Redis is away — its live event cannot be delivered (channel layers deliver at most once).
Redis is started again.

Proves: the page reconnects by itself (no reload: the same document), shows the escalation it missed (it
reconciles from the database on reconnect), and live events flow again (an escalation opened afterwards
appears without a reload).

Costs 10–30 s: the page retries with a jittered back-off capped at 5 s (static/js/live.js; htmx's default
would wait up to 64 s between tries after six failures, which once left the page offline for over a minute).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from tests.chaos.harness import record_row
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE

RECORD_SOCKET = (
    "window.__socket = [];"
    "document.addEventListener('htmx:wsOpen', () => window.__socket.push(['open', Date.now()]));"
    "document.addEventListener('htmx:wsClose', (e) => window.__socket.push(['close', Date.now(), e.detail.event.code]));"
    "document.addEventListener('htmx:wsConnecting', () => window.__socket.push(['connecting', Date.now()]));"
)


def open_escalation(operation: str):
    return review.create_escalation(
        operation=operation,
        reason="sensitive_operation",
        priority="high",
        deadline_seconds=900,
        agent=agent_actions.ensure_agent("support-refund"),
        arguments={"to": "ana@example.com"},
        context={},
    )


@pytest.mark.browser
@pytest.mark.slow
def test_the_review_queue_reconnects_after_a_redis_restart_and_reconciles(
    stack, chaos_db, local_services, browser, request, alice
):
    started = time.monotonic()
    base = stack.web.extra["url"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(RECORD_SOCKET)
    page = context.new_page()
    try:
        login(page, base, ALICE)
        page.goto(f"{base}/review/")
        queue = page.locator("#queue-page")
        expect(queue).to_have_attribute("data-live", "open", timeout=10_000)
        page.evaluate("window.__sameDocument = true")
        before = open_escalation("send_before_outage")
        expect(page.locator(f"tr[data-escalation='{before.pk}']")).to_be_visible(timeout=10_000)

        local_services.stop_redis()
        try:
            expect(queue).to_have_attribute("data-live", "closed", timeout=20_000)
            missed = open_escalation("send_during_outage")  # its live event has nowhere to go
        finally:
            local_services.start_redis()
            back_at = time.time()

        try:
            expect(queue).to_have_attribute("data-live", "open", timeout=20_000)  # retried at most 5 s apart
        finally:
            print("socket events (kind, ms, close code):", page.evaluate("window.__socket"), "Redis back at", back_at)
        expect(page.locator(f"tr[data-escalation='{missed.pk}']")).to_be_visible(timeout=10_000)
        after = open_escalation("send_after_outage")
        expect(page.locator(f"tr[data-escalation='{after.pk}']")).to_be_visible(timeout=10_000)
        assert page.evaluate("window.__sameDocument") is True  # never reloaded
        events = page.evaluate("window.__socket")
        transitions = [event[0] for event in events if event[0] in ("open", "close")]
        reopened = [event[1] for event in events if event[0] == "open"][-1] / 1000
        screenshot(page, "chaos-review-queue-after-redis-restart")
    finally:
        context.close()
    record_row(
        request,
        "Redis restart: live review queue",
        runs="1 page, 3 escalations",
        **{
            "kills/restarts": "redis×1",
            "terminal": f"socket {transitions[0]}, {transitions.count('close')} closes, open again "
            f"{max(reopened - back_at, 0):.1f} s after Redis was back",
            "duplicate effects": "-",
            "re-executed steps": "-",
            "records lost": "0 (missed event reconciled)",
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert transitions[0] == "open" and "close" in transitions and transitions[-1] == "open", transitions
