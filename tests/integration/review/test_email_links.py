"""Signed single-use mail links (review/channels/links.py, review/mail_views.py) through the Django test client,
with tokens made as the mail makes them: a GET never decides, the POST decides once through review.actions
(channel "email", the reviewer named), and every way a link can be wrong gets its own page and status —
forged or tampered (every field), expired, used, changed since the mail, decided by someone else, claimed by
someone else, a reviewer who lost the role. And the reviewer's settings page (/review/settings/)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agentops.accounts import actions as account_actions
from review import actions as review
from review.channels import links
from review.models import AuditEvent, Escalation, ReviewerProfile, UsedMailLink
from tests.fixtures.factories import mail_reviewer, make_escalation
from tests.fixtures.people import ALICE, BEA, ERIN, PASSWORD, client_for

pytestmark = pytest.mark.django_db

A, R = Escalation.Decision.APPROVED, Escalation.Decision.REJECTED


def url(token: str) -> str:
    return f"{reverse('review:mail_link')}?{urlencode({'t': token})}"


def anonymous() -> Client:
    """The link is the credential: the reviewer opens it signed out, with CSRF checks on as in a browser."""
    return Client(enforce_csrf_checks=True)


def press(client: Client, token: str):
    """Open the link, then press the page's button (a POST with the page's CSRF token)."""
    page = client.get(url(token))
    assert page.status_code == 200, page.content[-800:]
    return client.post(url(token), {"csrfmiddlewaretoken": page.context["csrf_token"]})


def refusal(response) -> str:
    return response.context["verdict"].code


def test_opening_a_link_decides_nothing_and_the_button_decides_once_as_the_reviewer(alice):
    escalation = make_escalation(arguments={"to": "ana@example.com", "body": "<b>refund</b> issued"})
    token = links.make_token(escalation, alice, A)
    client = anonymous()

    page = client.get(url(token))
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("max-age=0") and "no-store" in page["Cache-Control"]
    body = page.content.decode()
    assert "Approve escalation" in body and "send_note" in body
    assert "&lt;b&gt;refund&lt;/b&gt;" in body and "<b>refund</b>" not in body  # agent text escaped
    assert Escalation.objects.get(pk=escalation.pk).state == "pending"  # the GET decided nothing
    assert not AuditEvent.objects.filter(escalation=escalation, event__in=["decided", "claimed"]).exists()

    done = client.post(url(token), {"csrfmiddlewaretoken": page.context["csrf_token"]})
    assert done.status_code == 200 and done.context["step"] == "done"
    decided = Escalation.objects.get(pk=escalation.pk)
    assert (decided.state, decided.decision, decided.decided_by) == ("decided", "approved", alice)
    event = AuditEvent.objects.get(escalation=escalation, event="decided")
    assert (event.actor, event.data["channel"], event.data["decision"]) == (alice, "email", "approved")

    again = client.get(url(token))
    assert again.status_code == 409 and refusal(again) == "used"
    assert "already used" in again.content.decode()
    replay = client.post(url(token), {"csrfmiddlewaretoken": page.context["csrf_token"]})
    assert replay.status_code == 409 and refusal(replay) == "used"
    assert AuditEvent.objects.filter(escalation=escalation, event="decided").count() == 1


def test_a_reject_link_rejects(alice):
    escalation = make_escalation()
    assert press(anonymous(), links.make_token(escalation, alice, R)).status_code == 200
    assert Escalation.objects.get(pk=escalation.pk).decision == "rejected"


def test_the_post_needs_the_pages_csrf_token(alice):
    escalation = make_escalation()
    answer = anonymous().post(url(links.make_token(escalation, alice, A)))
    assert answer.status_code == 403
    assert Escalation.objects.get(pk=escalation.pk).state == "pending"


def _tampered(token: str, field: str, value) -> str:
    """The token with one field of its signed payload changed and the original signature kept."""
    payload, rest = token.split(":", 1)
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data[field] = value
    raw = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{raw}:{rest}"


@pytest.mark.parametrize(
    "field, value",
    [("e", 999999), ("u", 1), ("d", "rejected"), ("v", 7), ("h", "0" * 64), ("x", 4102444800), ("n", "n" * 16)],
)
def test_a_token_with_any_field_changed_is_refused_with_400(alice, field, value):
    escalation = make_escalation()
    forged = _tampered(links.make_token(escalation, alice, A), field, value)
    for answer in (anonymous().get(url(forged)), Client().post(url(forged))):
        assert answer.status_code in (400, 403), answer.status_code  # a POST without CSRF stops even earlier
    assert anonymous().get(url(forged)).status_code == 400
    assert "This link is not valid" in anonymous().get(url(forged)).content.decode()
    assert Escalation.objects.get(pk=escalation.pk).state == "pending"


def test_garbage_other_salts_and_odd_payloads_are_400_not_500(alice):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    well_signed_but_odd = [
        signing.dumps(
            {"e": escalation.pk, "u": alice.pk, "d": "taken_over", "v": 0, "h": "", "x": 0, "n": "x" * 16},
            salt=links.SALT,
        ),
        signing.dumps(["not", "a", "dict"], salt=links.SALT),
        signing.dumps({"e": str(escalation.pk)}, salt=links.SALT),
    ]
    for bad in [
        "x",
        "a:b:c",
        token[:-3],
        token + "x",
        signing.dumps({"e": escalation.pk}, salt="other"),
        *well_signed_but_odd,
    ]:
        answer = anonymous().get(url(bad))
        assert answer.status_code == 400, (bad, answer.status_code)
        assert answer.context["verdict"].code == "bad"


def test_a_link_to_a_deleted_escalation_is_404(alice):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    Escalation.objects.filter(pk=escalation.pk).delete()
    assert anonymous().get(url(token)).status_code == 404


def test_an_expired_link_is_410_and_decides_nothing(alice):
    escalation = make_escalation()
    escalation.deadline_at = timezone.now() - timedelta(seconds=1)  # as if mailed with a deadline now past
    token = links.make_token(escalation, alice, A)
    answer = anonymous().get(url(token))
    assert answer.status_code == 410 and refusal(answer) == "expired"
    assert "expired" in answer.content.decode()
    assert Client().post(url(token)).status_code in (403, 410)
    assert Escalation.objects.get(pk=escalation.pk).state == "pending"


def test_an_item_changed_since_the_mail_is_refused_with_a_pointer_to_the_approval_screen(alice, bob):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    review.claim(escalation.pk, bob)  # bob opens the approval screen: the item is his for now
    held = anonymous().get(url(token))
    assert held.status_code == 409 and refusal(held) == "claimed"
    assert "bob is working on this item" in held.content.decode()
    assert reverse("review:detail", args=[escalation.pk]) in held.content.decode()

    review.release(escalation.pk, bob)  # free again, and still the item the mail showed
    assert anonymous().get(url(token)).status_code == 200

    arguments = make_escalation(arguments={"amount": 10})
    forged_hash = links.make_token(arguments, alice, A)
    Escalation.objects.filter(pk=arguments.pk).update(arguments={"amount": 10_000})  # same version, new arguments
    assert refusal(anonymous().get(url(forged_hash))) == "changed"
    assert Escalation.objects.filter(state="decided").count() == 0


def test_the_reviewer_who_opened_the_item_in_the_browser_still_decides_from_the_mail(alice):
    """Opening the approval screen claims the item and leaving it releases it: neither changes what the mail
    showed, so the mailed link still decides, whether the reviewer's own claim is held or was given back."""
    browser = client_for(ALICE)
    held, released = make_escalation(), make_escalation()
    tokens = {item.pk: links.make_token(item, alice, A) for item in (held, released)}
    for item in (held, released):
        assert browser.get(reverse("review:detail", args=[item.pk])).status_code == 200
        assert Escalation.objects.get(pk=item.pk).claimed_by == alice
    browser.post(reverse("review:release", args=[released.pk]))
    assert Escalation.objects.get(pk=released.pk).state == "pending"

    for item in (held, released):
        done = press(anonymous(), tokens[item.pk])
        assert done.status_code == 200 and done.context["step"] == "done", done.content[-600:]
        row = Escalation.objects.get(pk=item.pk)
        assert (row.state, row.decision, row.decided_by) == ("decided", "approved", alice)


def test_an_item_decided_by_someone_else_says_who_and_how(alice, bob):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    review.decide(escalation.pk, bob, "rejected", comment="not this customer")  # bob decided in the browser
    opened = anonymous().get(url(token))
    assert opened.status_code == 409 and refusal(opened) == "closed"
    assert "already decided (rejected) by bob, from the browser" in opened.content.decode()
    assert not UsedMailLink.objects.exists()


def test_a_press_that_loses_the_race_leaves_the_link_unused(alice, bob):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    client = anonymous()
    page = client.get(url(token))
    review.decide(escalation.pk, bob, "approved")
    answer = client.post(url(token), {"csrfmiddlewaretoken": page.context["csrf_token"]})
    assert answer.status_code == 409 and refusal(answer) == "closed"
    assert "by bob" in answer.content.decode()
    assert not UsedMailLink.objects.exists()
    assert Escalation.objects.get(pk=escalation.pk).decided_by == bob


def test_the_reviewer_must_still_hold_the_role_for_the_queue(alice, bob, erin):
    escalation = make_escalation()
    token = links.make_token(escalation, alice, A)
    account_actions.ensure_user("alice", PASSWORD, roles=())  # alice is no longer a reviewer
    answer = anonymous().get(url(token))
    assert answer.status_code == 403 and refusal(answer) == "forbidden"

    expert_item = make_escalation()
    reviewer_token = links.make_token(expert_item, bob, A)
    expert_token = links.make_token(expert_item, erin, A)
    review.escalate_to_expert(expert_item.pk, erin)
    assert refusal(anonymous().get(url(reviewer_token))) == "forbidden"  # the expert queue is for experts
    assert refusal(anonymous().get(url(expert_token))) == "changed"  # erin may, but the item moved on


def test_an_llm_item_gets_no_approve_link_and_a_forged_one_is_refused(alice):
    escalation = make_escalation(kind="llm", source="gateway", reason="all_fallbacks_failed")
    assert not escalation.approvable
    payload = signing.loads(links.make_token(escalation, alice, R), salt=links.SALT)
    payload["d"] = A
    answer = anonymous().get(url(signing.dumps(payload, salt=links.SALT)))
    assert answer.status_code == 400


# --- the reviewer's settings page ----------------------------------------------------------------------------
def test_the_settings_page_saves_the_profile_and_says_mail_is_off_without_a_server(alice, settings):
    settings.REVIEW_EMAIL_ENABLED = False
    client = client_for(ALICE)
    page = client.get(reverse("review:settings"))
    assert page.status_code == 200
    assert "E-mail approvals are off" in page.content.decode()
    assert reverse("review:settings") in client.get(reverse("review:queue")).content.decode()  # linked from the queue

    form = {
        "email": "alice@example.com",
        "email_opt_in": "on",
        "email_priorities": ["high", "low"],
        "language": "zh-hans",
        "chat_user_id": "U024BE7LH",
    }
    saved = client.post(reverse("review:settings"), form)
    assert saved.status_code == 302
    profile = ReviewerProfile.objects.get(user=alice)
    assert (profile.email_opt_in, profile.email_priorities, profile.email_reminders) == (True, "high,low", False)
    assert (profile.language, profile.chat_user_id) == ("zh-hans", "U024BE7LH")
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"


def test_settings_errors_are_form_errors(alice, bob):
    mail_reviewer(bob, chat_user_id="U0BOB")
    ReviewerProfile.objects.filter(user=bob).update(teams="billing")
    client = client_for(ALICE)
    answer = client.post(
        reverse("review:settings"),
        {"email": "not-an-address", "email_opt_in": "on", "chat_user_id": "U0BOB", "language": "xx"},
    )
    assert answer.status_code == 422
    errors = answer.context["form"].errors
    assert set(errors) == {"email", "chat_user_id", "language", "email_priorities"}
    assert "Another reviewer has linked this chat user id." in answer.content.decode()
    assert not ReviewerProfile.objects.filter(user=alice).exists()
    assert client.post(reverse("review:settings"), {"teams": "billing", "email": ""}).status_code == 302
    assert ReviewerProfile.objects.get(user=alice).teams == ""  # teams are not the reviewer's to set


def test_the_settings_page_is_for_reviewers_and_experts(bea, erin):
    assert client_for(ERIN).get(reverse("review:settings")).status_code == 200
    assert client_for(BEA).get(reverse("review:settings")).status_code == 403
    assert Client().get(reverse("review:settings")).status_code == 302
