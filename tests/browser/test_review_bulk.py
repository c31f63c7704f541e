"""Chromium: bulk approve of rows selected with the mouse and with x, through one confirmation, the rows
leaving the queue live (for another reviewer too) and the skipped report; a and r never decide on one key;
assign to me from a row and from the approval screen, and to another reviewer."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from agentops.config.source import config_source
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import make_escalation
from tests.fixtures.people import ALICE, BOB
from tests.fixtures.stack import reseed_runtime

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack_ready(redis_client, alice, bob):
    """alice works the queue; bob holds an item, and watches his own queue."""
    reseed_runtime()
    config_source().invalidate()


def console_errors(page) -> list[str]:
    """The page's console errors from now on, but Chromium's own occasional /favicon.ico probe (the pages
    link an SVG icon; the browser sometimes asks for the .ico anyway and logs its 404)."""
    seen: list[str] = []

    def record(message) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            seen.append(message.text)

    page.on("console", record)
    return seen


def open_queue(page, base: str) -> None:
    page.goto(f"{base}/review/")
    page.wait_for_selector("#queue-page[data-live='open']", timeout=10000)


def row(page, escalation: Escalation):
    return page.locator(f"#queue-rows tr[data-escalation='{escalation.pk}']")


def state(escalation: Escalation) -> tuple[str, str]:
    fresh = Escalation.objects.get(pk=escalation.pk)
    return fresh.state, fresh.decision


def test_bulk_approve_rows_picked_with_the_mouse_and_x_with_one_confirmation(web, page, second_page, stack_ready):
    base = web.extra["url"]
    first, second, third = (make_escalation(session_id=f"routine-{i}") for i in range(3))
    held = make_escalation(operation="delete_file", arguments={"path": "/srv/a"}, session_id="held")
    llm = make_escalation(operation="planning", kind="llm", reason="all_fallbacks_failed", priority="medium")
    review.claim(held.pk, BOB.user())
    errors, bob_errors = console_errors(page), console_errors(second_page)
    login(page, base, ALICE)
    login(second_page, base, BOB)
    open_queue(second_page, base)
    open_queue(page, base)
    expect(page.locator("#queue-rows tr[data-escalation]")).to_have_count(5)
    expect(row(page, first)).to_have_class(re.compile(r"\bselected\b"))  # the cursor starts on the most urgent
    expect(page.locator("#bulk-approve")).to_be_disabled()

    page.keyboard.press("x")  # the first row, from the keyboard
    row(page, second).locator("input.bulk-pick").click()  # two with the mouse
    row(page, held).locator("input.bulk-pick").click()
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(row(page, third)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("x")
    row(page, llm).locator("input.bulk-pick").click()
    expect(page.locator("#bulk-count")).to_have_text("5")
    expect(page.locator("#bulk-approve")).to_contain_text("5")

    page.keyboard.press("a")  # the selection's confirmation, from the server
    dialog = page.locator("#bulk-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Approve 3 escalations?")
    expect(dialog).to_contain_text("5 selected. 2 will be skipped:")
    expect(dialog.locator("#bulk-not-approvable")).to_contain_text("1 cannot be approved")
    expect(dialog.locator(".bulk-claimed")).to_have_text("1 is claimed by bob.")
    expect(dialog.locator(".bulk-operations")).to_contain_text("send_note × 3")
    expect(page.locator("#bulk-confirm-button")).to_be_focused()
    screenshot(page, "review-bulk-confirm")
    assert state(first) == ("pending", "")  # nothing decided before the confirmation

    page.keyboard.press("Enter")
    notice = page.locator("#queue-notice")
    expect(notice).to_contain_text("3 approved, 2 skipped:")
    expect(notice.locator(f"[data-skipped='{held.pk}']")).to_contain_text("bob is working on this item right now")
    expect(notice.locator(f"[data-skipped='{llm.pk}']")).to_contain_text("proposes nothing to approve")
    expect(page.locator("#queue-rows tr[data-escalation]")).to_have_count(2)  # the decided rows left, live
    expect(second_page.locator("#queue-rows tr[data-escalation]")).to_have_count(2, timeout=10000)
    expect(page.locator("#bulk-count")).to_have_text("0")
    screenshot(page, "review-bulk-report")
    for escalation in (first, second, third):
        assert state(escalation) == ("decided", "approved")
        (event,) = AuditEvent.objects.filter(escalation=escalation, event="decided")
        assert event.actor.username == "alice" and event.data["channel"] == "bulk"
    assert state(held)[0] == "claimed" and state(llm)[0] == "pending"
    assert errors == [] and bob_errors == []


def test_one_key_never_decides_a_row(web, page, stack_ready):
    base = web.extra["url"]
    approve_me, reject_me = make_escalation(session_id="one"), make_escalation(session_id="two")
    errors = console_errors(page)
    login(page, base, ALICE)
    open_queue(page, base)
    expect(row(page, approve_me)).to_have_class(re.compile(r"\bselected\b"))

    page.keyboard.press("a")
    quick = page.locator("#quick-confirm")
    expect(quick).to_be_visible()
    expect(quick.locator("#quick-confirm-what")).to_contain_text("send_note")
    page.keyboard.press("Escape")
    expect(quick).to_be_hidden()
    assert state(approve_me) == ("pending", "")

    page.keyboard.press("a")
    page.keyboard.press("a")  # the same key again accepts
    expect(page.locator("#queue-notice")).to_contain_text(f"Approved: escalation {approve_me.pk}")
    expect(row(page, approve_me)).to_have_count(0)
    assert state(approve_me) == ("decided", "approved")

    expect(row(page, reject_me)).to_have_class(re.compile(r"\bselected\b"))  # the next one took its place
    page.keyboard.press("r")
    expect(quick.locator("#quick-confirm-reject")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row(page, reject_me)).to_have_count(0)
    assert state(reject_me) == ("decided", "rejected")
    assert errors == []


def test_assign_to_me_from_a_row_and_from_the_approval_screen(web, page, stack_ready):
    base = web.extra["url"]
    from_row, from_screen = make_escalation(session_id="row"), make_escalation(session_id="screen")
    errors = console_errors(page)
    login(page, base, ALICE)
    open_queue(page, base)

    row(page, from_row).locator("button.assign-me").click()
    expect(page.locator("#queue-notice")).to_contain_text(f"Escalation {from_row.pk} is assigned to alice.")
    expect(row(page, from_row).locator(".assignee-name")).to_have_text("you")
    assert Escalation.objects.get(pk=from_row.pk).assigned_to.username == "alice"

    page.goto(f"{base}/review/{from_screen.pk}/")
    page.wait_for_selector("#review-page[data-live='open']")
    expect(page.locator("#assignee-name")).to_have_text("nobody")
    page.click("#assign-me")
    expect(page.locator("#assignee-name")).to_have_text("you")
    page.select_option("#assign-to", label="bob")
    page.click("#assign-to-button")
    expect(page.locator("#assignee-name")).to_have_text("bob")
    expect(page.locator("#audit-log li[data-event='assigned']")).to_have_count(2)
    fresh = Escalation.objects.select_related("assigned_to").get(pk=from_screen.pk)
    assert fresh.assigned_to.username == "bob" and fresh.state == "claimed"  # alice's claim from opening it stays
    events = AuditEvent.objects.filter(escalation=from_screen, event="assigned").order_by("pk")
    assert [(e.actor.username, e.data["assignee"]) for e in events] == [("alice", "alice"), ("alice", "bob")]
    screenshot(page, "review-assign")
    assert errors == []
