"""Chromium: reviewers work the live queue. An escalation made by a real worker run appears without a
reload and is approved with the keyboard; modify with edited arguments; take over; the second reviewer
gets the conflict message and keeps what they typed; an XSS corpus in every agent-supplied field stays
inert (no dialog, no request, no htmx attribute processed)."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, ToolEffect
from review import actions as review
from review.models import Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import run_in
from tests.fixtures.people import ALICE, BOB
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

REFUSAL_CONSOLE = re.compile(r"status of 409|status of 422")

LONG = "A" * 20_000
XSS_CORPUS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click me</a>',
    '<div hx-get="/admin/" hx-trigger="load">hx</div>',
    "![x](http://127.0.0.1:1/x)",
    '"><svg onload=alert(1)>',
    "abc\u202egnp.exe",
    "zero\u200bwidth\u200dchars\ufeff",
]
XSS = " ".join(XSS_CORPUS)


@pytest.fixture
def stack_ready(redis_client, alice, bob):
    """Flushes between transactional tests remove the migration's seed rows; put them back. The cast's two
    reviewers, alice and bob, work the queue."""
    reseed_runtime()
    config_source().invalidate()


def start_approval_run(data: dict | None = None) -> Run:
    run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-approval"), data or {})
    return run


def escalation_of(run: Run) -> Escalation:
    of_run = Escalation.objects.filter(run=run)
    return wait_for(of_run.first, timeout=30, message=f"the escalation of run {run.pk}")


def open_queue(page, base: str) -> None:
    page.goto(f"{base}/review/")
    page.wait_for_selector("#queue-page[data-live='open']", timeout=10000)


def open_detail(page, base: str, escalation: Escalation) -> None:
    page.goto(f"{base}/review/{escalation.pk}/")
    page.wait_for_selector("#review-page[data-live='open']", timeout=10000)


def note_escalation(**extra) -> Escalation:
    """A high-priority ``send_note`` escalation waiting in the reviewers' queue."""
    return review.create_escalation(
        operation="send_note",
        reason="sensitive_operation",
        priority="high",
        deadline_seconds=600,
        agent=agent_actions.ensure_agent("t-approval"),
        arguments={"to": "ana@example.com"},
        **extra,
    )


def errors(page) -> list[str]:
    return [e for e in page.console_errors if not REFUSAL_CONSOLE.search(e)]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_worker_escalation_appears_live_and_is_approved_with_the_keyboard(web, worker, browser, stack_ready):
    base = web.extra["url"]
    context = browser.new_context(viewport={"width": 1280, "height": 800}, permissions=["notifications"])
    # record notifications instead of showing them (an init script: the page's CSP does not apply to it)
    context.add_init_script(
        "window.__notes = []; window.Notification = class { constructor(title, o) { window.__notes.push([title, o.body]); }"
        " static get permission() { return 'granted'; } static requestPermission() { return Promise.resolve('granted'); } };"
    )
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
    try:
        # two older, less urgent items (one held by bob) so the new one lands on top
        common = {"deadline_seconds": 900, "arguments": {"query": "refund policy"}, "context": {}}
        review.create_escalation(
            operation="search_kb",
            reason="low_confidence",
            priority="medium",
            agent=agent_actions.ensure_agent("research"),
            confidence=0.41,
            **common,
        )
        held = review.create_escalation(
            operation="lookup_order",
            reason="max_retries_exceeded",
            priority="low",
            agent=agent_actions.ensure_agent("support-refund"),
            retry_count=3,
            **common,
        )
        review.claim(held.pk, BOB.user())
        login(page, base, ALICE)
        open_queue(page, base)
        expect(page.locator("#queue-rows tr[data-escalation]")).to_have_count(2)
        expect(page.locator(f"tr[data-escalation='{held.pk}'] .holder")).to_have_text("bob")
        page.evaluate("window.__sameDocument = true")

        run = start_approval_run({"to": "ana@example.com"})
        escalation = escalation_of(run)
        row = page.locator(f"tr[data-escalation='{escalation.pk}']")
        expect(row).to_be_visible(timeout=15000)
        assert page.evaluate("window.__sameDocument") is True  # no reload
        expect(row.locator(".badge.high")).to_be_visible()
        expect(row).to_contain_text("send_note")
        expect(row).to_contain_text("ana@example.com")
        expect(row.locator(".sla")).to_have_text(re.compile(r"^(9|10):\d\d$"))
        notes = page.evaluate("window.__notes")
        assert len(notes) == 1 and notes[0][0] == "High-priority escalation" and "send_note" in notes[0][1]

        expect(page.locator("#queue-rows tr[data-escalation]").first).to_have_attribute(
            "data-escalation", str(escalation.pk)
        )
        # the cursor started on the most urgent row at load and stays with it: the new item landed above it
        page.keyboard.press("k")
        expect(row).to_have_class(re.compile(r"\bselected\b"))
        screenshot(page, "review-queue")
        page.keyboard.press("a")  # opens a confirmation: one key never decides
        expect(page.locator("#quick-confirm")).to_be_visible()
        expect(page.locator("#quick-confirm-what")).to_contain_text("send_note")
        assert Escalation.objects.get(pk=escalation.pk).state == "pending"
        page.keyboard.press("Enter")
        expect(page.locator("#queue-notice")).to_contain_text(f"Approved: escalation {escalation.pk}")
        expect(row).to_have_count(0)
        expect(page.locator("#queue-rows tr[data-escalation]")).to_have_count(2)
        expect(page.locator(f"tr[data-decided='{escalation.pk}']")).to_be_visible()

        done = wait_for(run_in(run.pk, "succeeded", "failed"))
        assert done.status == "succeeded", done.error
        assert done.output["after"] == "after" and done.output["sent"]["created"] is True
        decided = Escalation.objects.select_related("decided_by").get(pk=escalation.pk)
        assert decided.decision == "approved" and decided.decided_by.username == "alice"
        assert page.evaluate("window.__sameDocument") is True
        assert console_errors == []
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_modify_with_edited_arguments_and_take_over(web, worker, page, stack_ready):
    base = web.extra["url"]
    modify_run = start_approval_run({"to": "ana@example.com"})
    takeover_run = start_approval_run({"to": "ben@example.com"})
    to_modify, to_take_over = escalation_of(modify_run), escalation_of(takeover_run)
    login(page, base, ALICE)

    # modify: from the queue, m opens the approval screen with the arguments focused
    open_queue(page, base)
    page.wait_for_selector(f"tr[data-escalation='{to_modify.pk}']")
    ids = page.locator("#queue-rows tr[data-escalation]").evaluate_all("rows => rows.map(r => r.dataset.escalation)")
    for _ in range(ids.index(str(to_modify.pk))):  # the cursor starts on the first row
        page.keyboard.press("j")
    expect(page.locator(f"tr[data-escalation='{to_modify.pk}']")).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("m")
    page.wait_for_url(re.compile(rf"/review/{to_modify.pk}/#modify$"))
    page.wait_for_selector("#review-page[data-live='open']")
    expect(page.locator("#id_arguments")).to_be_focused()
    expect(page.locator("#claim-holder")).to_have_text("claimed by you")
    expect(page.locator("#user-input")).to_contain_text("ana@example.com")
    expect(page.locator("#proposed-arguments")).to_contain_text('"body": "refund issued"')
    expect(page.locator("#run-link")).to_have_attribute("href", f"/runs/{modify_run.pk}/")
    expect(page.locator("#run-timeline")).to_contain_text("send_note")

    # invalid JSON: 422, the message, the text kept
    page.fill("#id_arguments", '{"to": "bo@example.com", ')
    expect(page.locator("#arguments-diff")).to_contain_text("Not valid JSON yet")
    page.fill("#id_comment", "customer changed address")
    page.click("#act-modify")
    expect(page.locator("#decision .field-error")).to_contain_text("Not valid JSON")
    expect(page.locator("#id_arguments")).to_have_value('{"to": "bo@example.com", ')
    expect(page.locator("#id_comment")).to_have_value("customer changed address")

    edited = '{"to": "bo@example.com", "body": "refund issued", "cc": "ops@example.com"}'
    page.fill("#id_arguments", edited)
    expect(page.locator("#arguments-diff .diff-changed")).to_contain_text("to")
    expect(page.locator("#arguments-diff .diff-added")).to_contain_text("cc")
    page.locator("#id_confidence").fill("65")
    expect(page.locator("#confidence-value")).to_have_text("65")
    screenshot(page, "review-approval")
    page.click("#act-modify")
    page.wait_for_url(f"{base}/review/")
    expect(page.locator(".messages")).to_contain_text(f"Approved with modified arguments: escalation {to_modify.pk}")

    done = wait_for(run_in(modify_run.pk, "succeeded", "failed"))
    assert done.status == "succeeded", done.error
    effect = ToolEffect.objects.get(pk=done.output["sent"]["effect_id"])
    assert effect.payload["to"] == "bo@example.com" and effect.payload["cc"] == "ops@example.com"
    decided = Escalation.objects.get(pk=to_modify.pk)
    assert decided.decision == "modified" and decided.reviewer_confidence == 65
    assert decided.comment == "customer changed address"

    # take over: the reviewer writes the result the agent receives
    open_detail(page, base, to_take_over)
    page.keyboard.press("t")
    expect(page.locator("#id_result")).to_be_focused()
    page.keyboard.type('{"sent_by_hand": true, "channel": "phone"}')
    page.click("#act-take-over")
    page.wait_for_url(f"{base}/review/")
    done = wait_for(run_in(takeover_run.pk, "succeeded", "failed"))
    assert done.status == "succeeded", done.error
    assert done.output["sent"] == {"sent_by_hand": True, "channel": "phone"}
    assert errors(page) == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_second_reviewer_gets_the_conflict_and_keeps_what_they_typed(web, page, second_page, stack_ready):
    base = web.extra["url"]
    escalation = note_escalation(context={"user_input": "refund order 42"})
    login(page, base, ALICE)
    login(second_page, base, BOB)
    open_detail(page, base, escalation)
    expect(page.locator("#claim-holder")).to_have_text("claimed by you")
    open_detail(second_page, base, escalation)
    expect(second_page.locator("#claim-holder")).to_have_text("alice is working on this")

    # bob decides anyway while alice holds it
    second_page.fill("#id_comment", "bob thinks this is wrong")
    second_page.click("#act-reject")
    expect(second_page.locator("#decision-notice")).to_have_text("alice is working on this item right now.")
    expect(second_page.locator("#id_comment")).to_have_value("bob thinks this is wrong")

    # alice approves; bob's screen learns it live, and his next try is refused with who decided
    page.fill("#id_comment", "fine")
    page.keyboard.press("Escape")
    page.keyboard.press("a")  # puts the focus on Approve: one key never decides
    expect(page.locator("#act-approve")).to_be_focused()
    assert Escalation.objects.get(pk=escalation.pk).state == "claimed"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/review/")
    expect(second_page.locator("#escalation-state")).to_contain_text("Approved", timeout=10000)
    second_page.fill("#id_result", "I would have phoned")
    second_page.click("#act-take-over")
    expect(second_page.locator("#decision-notice")).to_have_text(
        "Already decided (approved) by alice. Your input was not applied."
    )
    expect(second_page.locator("#id_comment")).to_have_value("bob thinks this is wrong")
    expect(second_page.locator("#id_result")).to_have_value("I would have phoned")
    assert Escalation.objects.get(pk=escalation.pk).comment == "fine"
    assert errors(page) == [] and errors(second_page) == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_leaving_the_screen_gives_the_item_back_and_a_reload_keeps_it(web, page, stack_ready):
    """The page's leaving beacon names the claim it holds (its lease): a reload, which claims again, keeps the
    item; going back to the queue releases it. Neither changes the item's version (a mailed link or a chat
    button made before still decides)."""
    base = web.extra["url"]
    escalation = note_escalation()
    login(page, base, ALICE)
    open_detail(page, base, escalation)
    expect(page.locator("#claim-holder")).to_have_text("claimed by you")
    page.reload()
    page.wait_for_selector("#review-page[data-live='open']", timeout=10000)
    expect(page.locator("#claim-holder")).to_have_text("claimed by you")
    assert Escalation.objects.get(pk=escalation.pk).state == "claimed"

    open_queue(page, base)
    left = wait_for(
        lambda: (row := Escalation.objects.get(pk=escalation.pk)).state == "pending" and row,
        timeout=10,
        message="the beacon to give the item back",
    )
    assert left.claimed_by is None and left.version == escalation.version
    assert errors(page) == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_xss_corpus_in_every_agent_supplied_field_is_inert(web, worker, page, stack_ready):
    base = web.extra["url"]
    origin = urlparse(base).netloc
    run = start_approval_run({"to": XSS, "long": LONG, "note": XSS})
    from_worker = escalation_of(run)
    crafted = review.create_escalation(
        run=run,
        operation="send_<img src=x onerror=alert(1)><script>alert(1)</script>\u202e",
        reason="low_confidence",
        priority="high",
        deadline_seconds=600,
        agent=agent_actions.ensure_agent('evil"><script>alert(1)</script>'),
        session_id=XSS[:200],
        arguments={XSS: XSS, "long": LONG, "nested": {"hx": XSS_CORPUS[3], "md": XSS_CORPUS[4]}},
        context={
            "user_input": XSS,
            "agent_analysis": XSS + "\n" + LONG,
            "suggestions": XSS_CORPUS,
            "messages": [{"role": "user", "content": XSS}],
        },
        rule=XSS,
        confidence=0.3,
    )

    dialogs, requests = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    login(page, base, ALICE)
    requests.clear()

    open_queue(page, base)
    page.wait_for_selector(f"tr[data-escalation='{crafted.pk}']")
    page.wait_for_selector(f"tr[data-escalation='{from_worker.pk}']")
    for escalation in (crafted, from_worker):
        open_detail(page, base, escalation)
        expect(page.locator("#user-input")).to_contain_text("<script>alert(1)</script>")
        page.wait_for_timeout(500)  # time for anything that would fire on load
        inert = page.evaluate(
            """() => ({
                scripts: [...document.scripts].filter(s => !s.src.includes('/static/') && !s.src.endsWith('/jsi18n/')).length,
                imgs: document.querySelectorAll('main img').length,
                svgs: document.querySelectorAll('main svg').length,
                handlers: [...document.querySelectorAll('main *')].filter(
                    e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
                jsLinks: [...document.querySelectorAll('a[href]')].filter(
                    a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:')).length,
                hxAdmin: document.querySelectorAll('[hx-get="/admin/"]').length,
                outsideDisabled: [...document.querySelectorAll('pre, textarea, code')].filter(
                    e => e.textContent.includes('alert(1)') && !e.closest('[hx-disable]')).length,
            })"""
        )
        assert inert == {
            "scripts": 0,
            "imgs": 0,
            "svgs": 0,
            "handlers": 0,
            "jsLinks": 0,
            "hxAdmin": 0,
            "outsideDisabled": 0,
        }
        expect(page.locator("#user-input")).to_contain_text("\\u202e")  # the RTL override made visible
        screenshot(page, f"review-xss-{'crafted' if escalation is crafted else 'worker'}")
        if escalation is crafted:  # the modify textarea still holds the complete 20 000-character value
            assert LONG in page.locator("#id_arguments").input_value()

    assert dialogs == []
    unexpected = [
        url
        for url in requests
        if urlparse(url).netloc != origin
        or not re.match(
            r"^/(review/(\d+/(live|release|claim)?)?|static/.*|jsi18n/|ws/live/.*|favicon\.ico)?$", urlparse(url).path
        )
    ]
    assert unexpected == []
    assert page.console_errors == []
