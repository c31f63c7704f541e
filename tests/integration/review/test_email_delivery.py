"""Escalations by e-mail through the real path: review.actions commits an escalation (or marks a reminder), the
Celery worker runs review.notify, review/channels/email.py sends over SMTP to the session's aiosmtpd server
(tests/fixtures/smtp.py), and the test reads what arrived: who got it (opt-in, priority, team, queue), what it
says (the operation and arguments escaped, the links), once per notice, in the reviewer's language."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review import channels
from review.models import AuditEvent, MailDelivery, ReviewerProfile
from tests.fixtures.factories import mail_reviewer, make_escalation
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = "<script>alert('mail')</script>"


def mailed(escalation, notice: str = "new") -> AuditEvent:
    """The ``mailed`` audit event of ``notice``, once the worker has sent that notice (it is written after the
    SMTP session, so every mail of the notice has arrived by then)."""
    events = AuditEvent.objects.filter(escalation=escalation, event="mailed", data__notice=notice)
    return wait_for(events.first, timeout=30, message=f"the {notice} mail of escalation {escalation.pk}")


def hrefs(html: str) -> dict[str, str]:
    return dict(re.findall(r'<a id="(mail-[a-z]+)" href="([^"]+)"', html))


@pytest.fixture
def support_agent(db):
    """t-approval in team "support": its escalations carry that team."""
    agent_actions.ensure_agent("t-approval")
    return agent_actions.update_agent("t-approval", team="support")


def test_a_new_escalation_mails_exactly_the_opted_in_reviewers_of_its_team_and_priority(
    worker, inbox, support_agent, alice, bob, erin, charlie, root
):
    mail_reviewer(alice)  # every team, every priority: mailed
    mail_reviewer(bob)
    ReviewerProfile.objects.filter(user=bob).update(teams="billing")  # (an admin's edit) another team: not mailed
    mail_reviewer(erin, email_priorities="high")
    ReviewerProfile.objects.filter(user=erin).update(teams="support,billing")  # an expert of the team: mailed
    mail_reviewer(charlie)  # opted in, but no reviewer role: not mailed
    mail_reviewer(root, email_priorities="low")  # a superuser who wants low-priority items only: not mailed

    escalation = make_escalation(support_agent, priority="high")
    event = mailed(escalation)
    assert event.data == {"notice": "new", "queue": "reviewers", "to": ["alice", "erin"]}
    assert sorted(address for m in inbox.messages for address in m.rcpt_tos) == [
        "alice@example.com",
        "erin@example.com",
    ]
    assert set(MailDelivery.objects.filter(escalation=escalation).values_list("user__username", "notice")) == {
        ("alice", "new"),
        ("erin", "new"),
    }

    # moved to the expert queue: the experts hear of it at once, and its reminder goes to the experts only
    # (alice wants reminders, but is a reviewer)
    inbox.clear()
    moved = review.escalate_to_expert(escalation.pk, alice)
    wait_for(lambda: AuditEvent.objects.filter(escalation=escalation, event="mailed", data__queue="experts").exists())
    to_experts = AuditEvent.objects.get(escalation=escalation, event="mailed", data__queue="experts")
    assert to_experts.data == {"notice": "new", "queue": "experts", "to": ["erin"]}
    assert [m.rcpt_tos for m in inbox.messages] == [["erin@example.com"]]
    inbox.clear()
    assert review.due_for_reminder(now=moved.deadline_at - timedelta(seconds=30)) == [escalation.pk]
    reminder = mailed(escalation, "reminder")
    assert reminder.data == {"notice": "reminder", "queue": "experts", "to": ["erin"]}
    assert [m.rcpt_tos for m in inbox.messages] == [["erin@example.com"]]


def test_the_mail_shows_the_action_and_its_arguments_as_text_with_links(worker, inbox, stack_env, alice):
    mail_reviewer(alice)
    escalation = make_escalation(
        arguments={"to": "ana@example.com", "body": SCRIPT, "note": "x" * 5000},
        context={"user_input": "please <b>refund</b> order 42", "agent_analysis": "refund looks right"},
    )
    mailed(escalation)
    mail = inbox.wait_for_one("alice@example.com")
    assert "send_note" in mail.subject and "t-approval" in mail.subject
    assert mail.message["Auto-Submitted"] == "auto-generated"

    assert f'"body": "{SCRIPT}"' in mail.text  # pretty JSON, as on the approval screen; plain text stays plain
    assert "please <b>refund</b> order 42" in mail.text
    assert "x" * 5000 not in mail.text and "x" * 2000 + "…" in mail.text  # cut to a readable length
    assert len(mail.text) < 6000

    assert "<script" not in mail.html and "&lt;script&gt;alert(&#x27;mail&#x27;)&lt;/script&gt;" in mail.html
    assert "please &lt;b&gt;refund&lt;/b&gt; order 42" in mail.html
    links = hrefs(mail.html)
    base = stack_env["PUBLIC_URL"]
    assert links["mail-approve"].startswith(f"{base}/review/mail/")
    assert links["mail-reject"].startswith(f"{base}/review/mail/")
    assert links["mail-approve"] != links["mail-reject"]
    assert links["mail-open"] == f"{base}/review/{escalation.pk}/"
    assert links["mail-approve"] in mail.text and links["mail-reject"] in mail.text

    # an LLM call whose every fallback failed proposes nothing to approve: Reject and the screen only
    inbox.clear()
    nothing_to_approve = make_escalation(kind="llm", source="gateway", reason="all_fallbacks_failed")
    mailed(nothing_to_approve)
    links = hrefs(inbox.wait_for_one("alice@example.com").html)
    assert set(links) == {"mail-reject", "mail-open"}


def test_a_reminder_is_mailed_once_near_the_deadline(worker, inbox, settings, alice, bob):
    mail_reviewer(alice)
    mail_reviewer(bob, email_reminders=False)  # new items only
    escalation = make_escalation(deadline_seconds=600)
    assert mailed(escalation).data["to"] == ["alice", "bob"]
    inbox.clear()

    assert review.due_for_reminder(now=escalation.deadline_at - timedelta(seconds=300)) == []  # not yet
    assert review.due_for_reminder(now=escalation.deadline_at - timedelta(seconds=60)) == [escalation.pk]
    assert mailed(escalation, "reminder").data["to"] == ["alice"]
    reminder = inbox.wait_for_one("alice@example.com")
    assert reminder.subject.startswith("[agentops] Reminder: send_note")
    assert "still waits for a decision" in reminder.text
    assert review.due_for_reminder(now=escalation.deadline_at - timedelta(seconds=30)) == []  # reminded once

    # the same notice delivered again (a task redelivered after a worker died) sends nothing twice
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.REVIEW_EMAIL_ENABLED = inbox.host, inbox.port, True
    assert channels.notify(escalation.pk, "reminder")["email"] == 0
    assert channels.notify(escalation.pk, "new")["email"] == 0
    assert [m.subject for m in inbox.messages] == [reminder.subject]
    assert AuditEvent.objects.filter(escalation=escalation, event="mailed").count() == 2


def test_a_chinese_reviewer_gets_the_mail_in_chinese(worker, inbox, alice, bob):
    mail_reviewer(alice, language="zh-hans")
    mail_reviewer(bob)
    escalation = make_escalation(arguments={"to": "ana@example.com", "body": "退款已处理"})
    mailed(escalation)
    chinese = inbox.wait_for_one("alice@example.com")
    english = inbox.wait_for_one("bob@example.com")
    assert "批准" in chinese.subject and "send_note" in chinese.subject  # the agent's names stay as they are
    for text in (chinese.text, chinese.html):
        assert "批准" in text and "拒绝" in text and "审批页面" in text
        assert "退款已处理" in text and "Approve" not in text and "Reject" not in text
    assert "Approve" in english.text and "批准" not in english.text
