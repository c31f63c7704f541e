"""Chromium in both languages: every screen we own, rendered for a browser that asks for Chinese
(Accept-Language zh-CN), shows no English word outside agent data; the same screens for an English browser
show no Chinese; the header's switch changes the language of the same page and keeps it (the cookie)."""

from __future__ import annotations

import pprint
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Step
from budgets.actions import webhooks as webhook_actions
from budgets.models import Webhook
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import make_budget, make_escalation, make_run, seed_prices
from tests.fixtures.people import ADA, ALICE, BEA, CHARLIE, ROOT
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.untranslated import chinese_in, english_words, visible_texts


@pytest.fixture
def zh_page(browser) -> Iterator:
    """A page of a browser whose Accept-Language asks for Chinese (Playwright sends the context's locale)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def en_page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def screens(redis_client, alice, bea, ada, root, charlie) -> dict:
    """One of everything the screens show: a run with a retried and a fallback step, an open escalation with
    its run, budgets with limits and spend, prices, a webhook."""
    reseed_runtime()
    seed_prices()
    agent = agent_actions.ensure_agent("t-approval")
    run = make_run(
        agent,
        "waiting_human",
        started_at=timezone.now() - timedelta(seconds=30),
        input_tokens=12_345,
        output_tokens=678,
        cost_usd=Decimal("1234.5678"),
        session_id="sess-zh",
    )
    Step.objects.create(
        run=run, seq=1, kind="llm", name="planning", status="completed", attempts=2, executions=1, handler="backup",
        model="gpt-4o-mini", duration_ms=2310.0, input_tokens=350, output_tokens=120, cost_usd=Decimal("0.00123"),
        error_class="RateLimitError",
        hops=[{"handler": "primary", "outcome": "failed", "target": "simulated:gpt-4o", "error_class": "RateLimitError",
               "attempts": 2, "duration_ms": 1800.0, "waits": [1.0], "status": 429},
              {"handler": "backup", "outcome": "ok", "target": "simulated:gpt-4o-mini", "attempts": 1, "duration_ms": 510.0}],
    )  # fmt: skip
    escalation = make_escalation(agent, run=run, step_seq=2, value=1500.0)
    Step.objects.create(
        run=run, seq=2, kind="tool", name="send_note", status="waiting_human", escalation_id=escalation.pk,
        arguments={"to": "ana@example.com"},
    )  # fmt: skip
    make_budget("Support daily", limit_tokens=100_000, limit_usd=Decimal("2500.00"))
    make_budget("Each session cap", scope="session", period="lifetime", limit_tokens=5_000)
    webhook_actions.save_webhook(Webhook(name="ops-room", url="https://hooks.slack.com/services/T0/B0/x"))
    return {"run": run, "escalation": escalation}


def pages(screens) -> list[tuple[object, str, str]]:
    """(who, path, what to wait for) of each screen."""
    esc, run = screens["escalation"], screens["run"]
    return [
        (None, "/accounts/login/", "#id_username"),
        (CHARLIE, "/", "main h1"),
        (ALICE, f"/review/{esc.pk}/", "#review-page[data-live='open']"),
        (ALICE, f"/runs/{run.pk}/", "#run-timeline"),
        (ALICE, "/runs/", "#runs-table"),
        (ALICE, "/review/stats/", "#decision-stats"),
        (ALICE, "/review/", "#queue-page[data-live='open']"),
        (ALICE, "/review/settings/", "main h1"),
        (ROOT, "/review/suggestions/", "main h1"),
        (BEA, "/budgets/", "#budgets-live"),
        (BEA, "/budgets/new/", "#budget-form"),
        (BEA, "/budgets/prices/", "#price-table"),
        (BEA, "/budgets/webhooks/", "#webhook-list"),
        (BEA, "/budgets/alerts/", "#alerts-live"),
        (BEA, "/costs/", "#costs-page[data-state='ready']"),
        (ADA, "/agents/", "#agents-table"),
        (ADA, "/agents/t-approval/", "#keys"),
        (ROOT, "/ops/", "#ops-status"),
        (ALICE, "/no-such-page/", "main h1"),
    ]


def visit_all(page, base: str, screens, check, name: str) -> None:
    problems: dict[str, object] = {}
    signed_in = None
    for who, path, ready in pages(screens):
        if who is not signed_in:
            page.context.clear_cookies()
            if who is not None:
                login(page, base, who)
            signed_in = who
        page.goto(base + path)
        page.wait_for_selector(ready, timeout=15_000)
        found = check(visible_texts(page))
        if found:
            problems[path] = found
        screenshot(page, f"{name}{path.strip('/').replace('/', '-') or '-home'}")
    assert problems == {}, pprint.pformat(problems, width=160)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_every_screen_in_chinese_shows_no_untranslated_english(web, zh_page, screens):
    base = web.extra["url"]
    zh_page.goto(base + "/accounts/login/")
    expect(zh_page.locator("html")).to_have_attribute("lang", "zh-hans")
    visit_all(zh_page, base, screens, english_words, "zh-")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_every_screen_in_english_shows_no_chinese(web, en_page, screens):
    base = web.extra["url"]
    en_page.goto(base + "/accounts/login/")
    expect(en_page.locator("html")).to_have_attribute("lang", "en")
    visit_all(en_page, base, screens, chinese_in, "en-")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_queue_in_chinese_shows_no_untranslated_english(web, zh_page, screens):
    base = web.extra["url"]
    login(zh_page, base, ALICE)
    zh_page.goto(base + "/review/")
    zh_page.wait_for_selector("#queue-page[data-live='open']", timeout=15_000)
    assert english_words(visible_texts(zh_page)) == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_header_switch_changes_the_language_of_the_same_page_and_keeps_it(web, en_page, screens):
    base = web.extra["url"]
    run = screens["run"]
    login(en_page, base, ALICE)
    en_page.goto(f"{base}/runs/{run.pk}/?from=switch")
    switch = en_page.get_by_role("group", name="Language")
    expect(switch.get_by_role("button", name="English")).to_have_attribute("aria-pressed", "true")
    switch.get_by_role("button", name="简体中文").click()
    en_page.wait_for_load_state("networkidle")
    assert en_page.url == f"{base}/runs/{run.pk}/?from=switch"  # back on the same page
    expect(en_page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(en_page.locator("#run-timeline h2")).to_contain_text("时间线")
    expect(en_page.locator("#run-header")).to_contain_text("US$1,234.567800")  # money, the Chinese way
    expect(en_page.locator("#run-header")).to_contain_text("12,345 / 678")  # thousands separators
    cookie = {c["name"]: c["value"] for c in en_page.context.cookies()}
    assert cookie["django_language"] == "zh-hans"
    en_page.goto(f"{base}/budgets/")  # the choice holds on the next page though the browser asks for English
    expect(en_page.locator("html")).to_have_attribute("lang", "zh-hans")
    en_page.get_by_role("group", name="语言").get_by_role("button", name="English").click()
    en_page.wait_for_load_state("networkidle")
    expect(en_page.locator("html")).to_have_attribute("lang", "en")
