"""Chromium follows the links of a review mail as the reviewer would: a real run waits for a human, the worker
mails alice through the session's SMTP server, and the browser (signed out: the link is the credential) opens the
Approve link from the received mail. Opening it decides nothing; the click does — the run resumes and succeeds,
the audit log says channel "email" and names alice — and the same link again is "already used"."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from review.models import AuditEvent, Escalation
from tests.browser.test_review import errors, stack_ready  # noqa: F401 (a fixture)
from tests.fixtures.browser import screenshot
from tests.fixtures.factories import mail_reviewer, run_in, waiting_approval_run
from tests.fixtures.waiting import wait_for


def link(html: str, anchor: str) -> str:
    found = re.search(rf'<a id="{anchor}" href="([^"]+)"', html)
    assert found, f"no {anchor} link in the mail"
    return found.group(1).replace("&amp;", "&")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_chromium_approves_from_the_mail_once(web, worker, inbox, page, second_page, stack_ready, alice, bob):  # noqa: F811
    mail_reviewer(alice)
    run, escalation = waiting_approval_run(to="ana@example.com")
    mail = inbox.wait_for_one("alice@example.com")
    approve = link(mail.html, "mail-approve")
    assert approve.startswith(f"{web.extra['url']}/review/mail/")

    page.goto(approve)
    expect(page.locator("#mail-link")).to_have_attribute("data-step", "confirm")
    expect(page.locator("h1")).to_contain_text(f"Approve escalation {escalation.pk}?")
    expect(page.locator("#mail-link-operation")).to_have_text("send_note")
    expect(page.locator("#mail-link-arguments")).to_contain_text("ana@example.com")
    screenshot(page, "review-mail-confirm")
    opened = Escalation.objects.get(pk=escalation.pk)
    assert (opened.state, opened.version) == ("pending", escalation.version)  # the GET decided (and claimed) nothing

    page.click("#mail-link-confirm")
    expect(page.locator("#mail-link-done")).to_contain_text(f"Escalation {escalation.pk} is approved")
    screenshot(page, "review-mail-approved")
    wait_for(run_in(run.pk, "succeeded"), timeout=30)  # the waiting run got "approved" and went on
    decided = AuditEvent.objects.get(escalation=escalation, event="decided")
    assert (decided.actor, decided.data["channel"], decided.data["decision"]) == (alice, "email", "approved")

    page.goto(approve)  # the same link again
    expect(page.locator("#mail-link")).to_have_attribute("data-refusal", "used")
    expect(page.locator("#mail-link-refused")).to_have_text("This link was already used")

    # the mail's Reject link, now that the item is decided, says who decided it and how
    second_page.goto(link(mail.html, "mail-reject"))
    expect(second_page.locator("#mail-link")).to_have_attribute("data-refusal", "closed")
    expect(second_page.locator(".form-error")).to_contain_text("by alice, from e-mail")
    screenshot(second_page, "review-mail-already-decided")
    assert errors(page) == [] and errors(second_page) == []
