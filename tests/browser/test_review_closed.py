"""Chromium: an item whose waiter gave up (issue 14, item 7) closes on the reviewer's open screen without a
reload, and deciding it then gets the "already closed" message (with what they typed kept) instead of a
decision nobody would act on."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review.models import Escalation
from tests.browser.test_review import errors, open_detail, stack_ready  # noqa: F401 (a fixture)
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_item_closed_because_its_waiter_gave_up_cannot_be_decided(web, page, stack_ready):  # noqa: F811
    base = web.extra["url"]
    escalation = review.create_escalation(
        operation="delete_account",
        reason="sensitive_operation",
        priority="high",
        deadline_seconds=600,
        agent=agent_actions.ensure_agent("t-approval"),
        source="api",
        arguments={"account": "acme"},
    )
    login(page, base, ALICE)
    open_detail(page, base, escalation)
    expect(page.locator("#claim-holder")).to_have_text("claimed by you")

    # the gateway's hold ends while alice is still reading
    review.close_unwaited(escalation.pk, channel="gateway", waited=300, why="the hold ended after 300 s")
    expect(page.locator("#escalation-state")).to_contain_text("Expired", timeout=10000)
    expect(page.locator("#audit-log li[data-event='waiter_gave_up']")).to_contain_text(
        "closed: the waiting client gave up", timeout=10000
    )

    page.fill("#id_comment", "looks fine to me")
    page.click("#act-approve")
    expect(page.locator("#decision-notice")).to_contain_text("Already closed: the agent stopped waiting (gateway)")
    expect(page.locator("#id_comment")).to_have_value("looks fine to me")
    screenshot(page, "review-closed-waiter-gave-up")
    closed = Escalation.objects.get(pk=escalation.pk)
    assert (closed.state, closed.decided_by) == ("expired", None)
    assert errors(page) == []
