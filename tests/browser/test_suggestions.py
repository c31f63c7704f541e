"""Chromium: a superuser opens the policy suggestions from the queue, reads the evidence, applies an
auto-approve in one click, finds the new row in the admin's policy list, and undoes it after the confirmation."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agentops.config.source import config_source
from review.models import EscalationPolicy, PolicyChange
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import make_decisions
from tests.fixtures.people import ROOT
from tests.fixtures.stack import reseed_runtime


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_open_see_the_evidence_apply_find_the_row_and_undo(web, page, redis_client, alice, root):
    reseed_runtime()
    config_source().invalidate()
    made = make_decisions("a" * 20, reviewer=alice, values=[25.0 * i for i in range(1, 21)])  # largest 500
    base = web.extra["url"]
    login(page, base, ROOT)

    page.goto(f"{base}/review/")
    page.click("#suggestions-link")
    suggestion = page.locator("article.suggestion[data-operation='send_note']")
    expect(suggestion.locator("h3")).to_contain_text("Auto-approve send_note for t-approval below value 510")
    expect(suggestion.locator("dd.counts")).to_have_text(
        "20 decisions: 20 approved unchanged, 0 modified, 0 taken over, 0 rejected"
    )
    expect(suggestion.locator("dd.rate")).to_have_text("100.0 % · the latest 10: all approved unchanged")
    expect(suggestion.locator("dd.values")).to_contain_text("25 – 500 (largest approved: 500)")
    expect(suggestion.locator("ul.last-decisions li")).to_have_count(5)
    expect(suggestion.locator("ul.last-decisions a").first).to_have_attribute("href", f"/review/{made[-1].pk}/")
    screenshot(page, "policy-suggestions")

    suggestion.locator("button[name=apply]").click()
    expect(page.locator("ul.messages")).to_contain_text(
        "Applied: Auto-approve send_note for t-approval below value 510."
    )
    expect(page.locator("article.suggestion")).to_have_count(0)
    row = EscalationPolicy.objects.get(agent__name="t-approval", operation="send_note")
    assert (row.auto_decision, row.auto_approve_below) == ("approve", 510.0)

    applied = page.locator("#applied-changes tr[data-change]")
    expect(applied).to_have_count(1)
    expect(applied).to_contain_text("100.0 % · 20 decisions")
    assert page.console_errors == []
    applied.get_by_role("link", name="open in the admin").click()
    expect(page.locator("#id_auto_decision")).to_have_value("approve")
    expect(page.locator("#id_auto_approve_below")).to_have_value("510.0")
    page.goto(f"{base}/admin/review/escalationpolicy/")
    expect(page.locator("#result_list")).to_contain_text("policy for t-approval / send_note")

    page.goto(f"{base}/review/suggestions/")
    page.console_errors.clear()  # Django's admin pages ask for /favicon.ico, which is not ours to serve
    page.locator("#applied-changes").get_by_role("link", name="Undo…").click()
    expect(page.locator("#undo-diff")).to_contain_text("auto_approve_below")
    expect(page.locator("#undo-page")).to_contain_text("Undoing deletes the policy row this suggestion created.")
    assert EscalationPolicy.objects.filter(pk=row.pk).exists()  # the confirmation changed nothing
    screenshot(page, "policy-suggestion-undo")
    page.click("button[name=undo]")
    expect(page.locator("ul.messages")).to_contain_text("Undone: the policy row is back as it was before.")
    expect(page.locator("#applied-changes")).to_contain_text("undone by root")
    expect(page.locator("article.suggestion")).to_have_count(1)  # suggested again: nothing covers it
    assert not EscalationPolicy.objects.filter(pk=row.pk).exists()
    assert PolicyChange.objects.filter(kind="undone", actor=root).count() == 1
    assert page.console_errors == []
