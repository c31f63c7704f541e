"""Approvals by e-mail: each new escalation, and each reminder before its deadline, mailed to the reviewers of its
queue who opted in (DESIGN §6; README "Approvals by e-mail").

Who gets a mail: an active user with an address and a reviewer profile that opted in, who may work the item's
queue (reviewers and experts for the reviewers' queue, experts only for the expert queue; superusers both), whose
priorities include the item's, whose teams include the item's (a profile without teams, or an item without a
team, matches every team) and, for a reminder, who asked for reminders. One multipart mail (text + HTML) per
reviewer, in their language, with signed single-use Approve / Reject links (review/channels/links.py) and a link
to the approval screen. Each delivery is recorded before it is sent (review.mail_actions) and audited
(``mailed``), so a notice reaches a reviewer once.

Everything the agent supplied (agent name, operation, arguments, context) is data: auto-escaped in the HTML part,
plain text in the text part, cut to a readable length, never translated.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from urllib.parse import urlencode

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.timesince import timeuntil
from django.utils.translation import gettext_lazy

from agentops.accounts import roles
from review import mail_actions, presenters
from review.channels import links
from review.models import Escalation, Priority, Reason

log = structlog.get_logger(__name__)

NOTICE_NEW, NOTICE_REMINDER = "new", "reminder"
ARGUMENTS_CHARS = 3000  # of the arguments shown in a mail; the approval screen shows them whole
CONTEXT_CHARS = 600
SUBJECT_CHARS = 60  # of the operation name in the subject line
MAIL_ERRORS = (smtplib.SMTPException, OSError)  # what a send can raise when the server refuses or is away

PRIORITY_WORDS = {
    Priority.HIGH: gettext_lazy("high"),
    Priority.MEDIUM: gettext_lazy("medium"),
    Priority.LOW: gettext_lazy("low"),
}
REASON_SENTENCES = {
    Reason.LOW_CONFIDENCE: gettext_lazy("The agent is not confident enough about this action."),
    Reason.SENSITIVE_OPERATION: gettext_lazy("The operation is a sensitive one."),
    Reason.HIGH_VALUE_DECISION: gettext_lazy("The action's value is above the limit."),
    Reason.MAX_RETRIES_EXCEEDED: gettext_lazy("The agent retried too often."),
    Reason.ALL_FALLBACKS_FAILED: gettext_lazy("Every model the agent could use failed."),
    Reason.BUDGET_EXCEEDED: gettext_lazy("A budget blocked the call."),
}


def absolute(path: str) -> str:
    return f"{settings.PUBLIC_URL}{path}"


def link_url(token: str) -> str:
    """The absolute address of a mail link (the token in the query string: logs and spans keep only the path)."""
    return absolute(f"{reverse('review:mail_link')}?{urlencode({'t': token})}")


def recipients(escalation: Escalation, notice: str) -> list:
    """The reviewers who get ``notice`` of ``escalation`` (see the module's docstring), by username."""
    queue_roles = [roles.EXPERT] if escalation.queue == Escalation.Queue.EXPERTS else [roles.REVIEWER, roles.EXPERT]
    candidates = (
        get_user_model()
        .objects.filter(is_active=True, reviewer_profile__email_opt_in=True)
        .exclude(email="")
        .filter(Q(is_superuser=True) | Q(groups__name__in=queue_roles))
        .select_related("reviewer_profile")
        .distinct()
        .order_by("username")
    )
    chosen = []
    for user in candidates:
        profile = user.reviewer_profile
        if escalation.priority not in profile.priority_list():
            continue
        if notice == NOTICE_REMINDER and not profile.email_reminders:
            continue
        teams = profile.team_list()
        if escalation.team and teams and escalation.team not in teams:
            continue
        chosen.append(user)
    return chosen


def language_of(user) -> str:
    profile = getattr(user, "reviewer_profile", None)
    return (profile.language if profile else "") or settings.LANGUAGE_CODE


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str, limit: int) -> str:
    return _cut(" ".join(presenters.reveal(text).split()), limit)


@dataclass
class Mail:
    subject: str
    text: str
    html: str


def compose(escalation: Escalation, user, notice: str) -> Mail:
    """The mail to ``user`` about ``escalation``, in the reviewer's language, with fresh signed links."""
    context = escalation.context if isinstance(escalation.context, dict) else {}
    with translation.override(language_of(user)):
        approve = links.make_token(escalation, user, Escalation.Decision.APPROVED) if escalation.approvable else ""
        reject = links.make_token(escalation, user, Escalation.Decision.REJECTED)
        values = {
            "notice": notice,
            "reminder": notice == NOTICE_REMINDER,
            "pk": escalation.pk,
            "reviewer": user.get_username(),
            "agent": presenters.reveal(escalation.agent.name if escalation.agent_id else "—"),
            "team": escalation.team,
            "operation": _one_line(escalation.operation, 200),
            "arguments": _cut(presenters.pretty(escalation.arguments), ARGUMENTS_CHARS),
            "user_input": _cut(presenters.pretty(context.get("user_input")), CONTEXT_CHARS),
            "agent_analysis": _cut(presenters.pretty(context.get("agent_analysis")), CONTEXT_CHARS),
            "reason": REASON_SENTENCES.get(escalation.reason, escalation.reason),
            "rule": presenters.reveal(escalation.rule),
            "priority": PRIORITY_WORDS.get(escalation.priority, escalation.priority),
            "priority_key": escalation.priority,
            "expert": escalation.queue == Escalation.Queue.EXPERTS,
            "deadline": links.when(escalation.deadline_at),
            "time_left": timeuntil(escalation.deadline_at, timezone.now()),
            "approve_url": link_url(approve) if approve else "",
            "reject_url": link_url(reject),
            "screen_url": absolute(reverse("review:detail", args=[escalation.pk])),
            "settings_url": absolute(reverse("review:settings")),
            "subject_operation": _one_line(escalation.operation, SUBJECT_CHARS),
            "subject_agent": _one_line(escalation.agent.name if escalation.agent_id else "—", SUBJECT_CHARS),
        }
        return Mail(
            subject=" ".join(render_to_string("review/email/subject.txt", values).split()),
            text=render_to_string("review/email/escalation.txt", values),
            html=render_to_string("review/email/escalation.html", values),
        )


def message(mail: Mail, to: str, connection=None, **headers: str) -> EmailMultiAlternatives:
    email = EmailMultiAlternatives(mail.subject, mail.text, to=[to], connection=connection, headers=headers)
    email.attach_alternative(mail.html, "text/html")
    return email


def deliver(escalation: Escalation, notice: str) -> int:
    """Mail ``notice`` of ``escalation`` to each of its reviewers not mailed it yet; answers how many mails went
    out. Nothing without a mail server (EMAIL_HOST unset)."""
    if not settings.REVIEW_EMAIL_ENABLED:
        return 0
    chosen = {user.pk: user for user in recipients(escalation, notice)}
    fresh = mail_actions.claim_mailings(escalation.pk, list(chosen), notice, escalation.queue)
    if not fresh:
        return 0
    sent, failed = [], []
    headers = {"Auto-Submitted": "auto-generated", "X-Agentops-Escalation": str(escalation.pk)}
    connection = get_connection()  # one SMTP session for every reviewer of this notice
    try:
        connection.open()
        for user_pk in fresh:
            user = chosen[user_pk]
            try:
                message(compose(escalation, user, notice), user.email, connection, **headers).send()
            except (*MAIL_ERRORS, ValueError):  # ValueError: an address Django will not put in a header
                log.exception("review.mail_send_failed", escalation=escalation.pk, user=user_pk, notice=notice)
                failed.append(user)
            else:
                sent.append(user)
    except MAIL_ERRORS:
        log.exception("review.mail_server_unreachable", escalation=escalation.pk, notice=notice)
        failed = [user for pk, user in chosen.items() if pk in fresh and user not in sent]
    finally:
        connection.close()
        mail_actions.record_mailed(escalation.pk, notice, escalation.queue, sent=sent, failed=failed)
    log.info("review.mailed", escalation=escalation.pk, notice=notice, sent=len(sent), failed=len(failed))
    return len(sent)


def send_test_mail(user) -> None:
    """A short mail to ``user``'s address, in their language, saying approvals by e-mail will reach them there."""
    with translation.override(language_of(user)):
        values = {"reviewer": user.get_username(), "settings_url": absolute(reverse("review:settings"))}
        subject = " ".join(render_to_string("review/email/test_subject.txt", values).split())
        text = render_to_string("review/email/test.txt", values)
    EmailMultiAlternatives(subject, text, to=[user.email], headers={"Auto-Submitted": "auto-generated"}).send()
