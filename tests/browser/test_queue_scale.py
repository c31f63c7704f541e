"""Chromium: a reviewer works a queue longer than a page. They page through it, search (Chinese too), sort,
reload and go back with the view kept in the address bar, save the view by name, and see a new item arrive
live on page 1 while the page they look at stays the one they chose."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review.models import PRIORITY_ORDER, Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE

COUNT = 55  # more than a page (review.queries.PAGE_SIZE = 50)


def make_queue() -> list[Escalation]:
    """COUNT open low-priority items, the oldest first; every fifth one is a Chinese refund note."""
    agent = agent_actions.ensure_agent("support-refund")
    now = timezone.now()
    made = Escalation.objects.bulk_create(
        Escalation(
            agent=agent,
            operation=f"lookup_{n:02d}",
            arguments={"note": "客户要求退款" if n % 5 == 0 else f"order {n}"},
            reason="max_retries_exceeded",
            priority="low",
            priority_rank=PRIORITY_ORDER["low"],
            deadline_at=now + timedelta(minutes=30 + n),
        )
        for n in range(COUNT)
    )
    for n, escalation in enumerate(made):
        Escalation.objects.filter(pk=escalation.pk).update(created_at=now - timedelta(minutes=COUNT - n))
    return made


def params(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def row_ids(page) -> list[int]:
    return [
        int(pk)
        for pk in page.locator("#queue-rows tr[data-escalation]").evaluate_all(
            "rs => rs.map(r => r.dataset.escalation)"
        )
    ]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_page_search_sort_reload_back_and_a_live_row_on_page_one(web, page, alice):
    base = web.extra["url"]
    made = make_queue()
    login(page, base, ALICE)
    page.goto(f"{base}/review/")
    page.wait_for_selector("#queue-page[data-live='open']", timeout=10000)
    range_ = page.locator("#queue-range")
    expect(range_).to_have_text("1–50 of 55")
    assert row_ids(page) == [e.pk for e in made[:50]]

    # next page: the rows, the range and the address bar follow, without a reload
    page.evaluate("window.__sameDocument = true")
    page.locator(".pager-next").first.click()
    expect(range_).to_have_text("51–55 of 55")
    assert row_ids(page) == [e.pk for e in made[50:]]
    assert params(page)["page"] == "2"
    assert page.evaluate("window.__sameDocument") is True

    # a new, most urgent item arrives live: page 2 stays page 2 (its rows shift by one), the count grows
    urgent = review.create_escalation(
        operation="send_refund",
        reason="sensitive_operation",
        priority="high",
        deadline_seconds=900,
        agent=agent_actions.ensure_agent("support-refund"),
        arguments={"amount": 42},
    )
    expect(range_).to_have_text("51–56 of 56", timeout=15000)
    assert row_ids(page) == [e.pk for e in made[49:]] and params(page)["page"] == "2"

    # back to page 1 (the back button): the new item is on top
    page.go_back()
    expect(range_).to_have_text("1–50 of 56")
    expect(page.locator("#queue-rows tr[data-escalation]").first).to_have_attribute("data-escalation", str(urgent.pk))

    # search in Chinese: Enter applies it, the address bar keeps it
    page.fill("#id_q", "退款")
    page.press("#id_q", "Enter")
    chinese = [e.pk for e in made if "退款" in e.arguments["note"]]
    expect(range_).to_have_text(f"1–{len(chinese)} of {len(chinese)}")
    assert row_ids(page) == chinese and params(page)["q"] == "退款"

    # sort newest first: a change of the select applies at once
    page.select_option("#id_sort", "-age")
    expect(page.locator("#queue-rows tr[data-escalation]").first).to_have_attribute("data-escalation", str(chinese[-1]))
    assert params(page)["sort"] == "-age" and params(page)["q"] == "退款"

    # reload: the same view from the address bar alone
    page.reload()
    page.wait_for_selector("#queue-page[data-live='open']", timeout=10000)
    expect(page.locator("#id_q")).to_have_value("退款")
    expect(page.locator("#id_sort")).to_have_value("-age")
    assert row_ids(page) == list(reversed(chinese))

    # save the view by name; it is listed as a link that opens the same view
    page.fill("#id_name", "退款 newest")
    page.click("#save-filter button[type=submit]")
    saved = page.locator("#saved-filters a[aria-current='true']")
    expect(saved).to_have_text("退款 newest")
    page.goto(f"{base}/review/")
    page.locator("#saved-filters a", has_text="退款 newest").click()
    page.wait_for_url(re.compile(r"sort=-age"))
    assert row_ids(page) == list(reversed(chinese))
    screenshot(page, "review-queue-scale")
    # a swap after the screenshot (Playwright gives inputs an empty style attribute) stays within the CSP
    page.select_option("#id_sort", "age")
    expect(page.locator("#queue-rows tr[data-escalation]").first).to_have_attribute("data-escalation", str(chinese[0]))
    assert page.console_errors == [], "\n".join(page.console_errors)
