"""The e-mail channel's changes of state: a reviewer's notification settings, which mails went to whom, and a
decision made with a signed mail link (single use). Decisions themselves go through ``review.actions.decide``."""

from __future__ import annotations

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from review import actions
from review.models import AuditEvent, Escalation, MailDelivery, ReviewerProfile, UsedMailLink

log = structlog.get_logger(__name__)

PROFILE_FIELDS = ("email_opt_in", "email_priorities", "email_reminders", "language", "chat_user_id")


class LinkUsed(Exception):
    """The mail link's nonce decided before (single use)."""


@transaction.atomic
def save_reviewer_settings(user, *, email: str, **fields) -> ReviewerProfile:
    """The reviewer's own settings page: their address and how they want to hear of escalations. Teams are not
    theirs to change (admins set them in the admin)."""
    unknown = set(fields) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not a reviewer setting: {', '.join(sorted(unknown))}")
    if user.email != email:
        user.email = email
        user.save(update_fields=["email"])
    profile, _ = ReviewerProfile.objects.get_or_create(user=user)
    for name, value in fields.items():
        setattr(profile, name, value)
    profile.save(update_fields=list(fields) or None)
    return profile


def claim_mailings(escalation_pk: int, user_pks: list[int], notice: str, queue: str) -> list[int]:
    """Reserve one mail of ``notice`` per reviewer and queue, before it is sent: answers the reviewers not
    mailed (or being mailed) yet, so a notice redelivered to another worker is never sent twice."""
    fresh = []
    for user_pk in user_pks:
        try:
            with transaction.atomic():
                MailDelivery.objects.create(escalation_id=escalation_pk, user_id=user_pk, notice=notice, queue=queue)
        except IntegrityError:
            continue
        fresh.append(user_pk)
    return fresh


@transaction.atomic
def record_mailed(escalation_pk: int, notice: str, queue: str, *, sent: list, failed: list) -> None:
    """After the SMTP session: the mails that went out are stamped and audited (``mailed``, naming each
    reviewer); the ones that failed give their reservation back, so the next notice may try again."""
    now = timezone.now()
    rows = MailDelivery.objects.filter(escalation_id=escalation_pk, notice=notice, queue=queue)
    if sent:
        rows.filter(user__in=[user.pk for user in sent]).update(sent_at=now)
        AuditEvent.objects.create(
            escalation_id=escalation_pk,
            event="mailed",
            data={"notice": notice, "queue": queue, "to": [user.get_username() for user in sent]},
        )
    if failed:
        rows.filter(user__in=[user.pk for user in failed], sent_at__isnull=True).delete()
        log.warning("review.mail_failed", escalation=escalation_pk, notice=notice, users=[u.pk for u in failed])


@transaction.atomic
def decide_by_link(*, nonce: str, escalation_pk: int, user, decision: str, version: int) -> Escalation:
    """Decide with a checked mail link (review/channels/links.py): its nonce is spent and the decision made in one
    transaction, so a refused decision (someone else was faster) leaves the link unused, and a link decides once
    however many presses race. Raises LinkUsed, or review.actions.DecisionConflict."""
    try:
        with transaction.atomic():
            UsedMailLink.objects.create(nonce=nonce, escalation_id=escalation_pk, user=user, decision=decision)
    except IntegrityError:
        raise LinkUsed(nonce) from None
    return actions.decide(escalation_pk, user, decision, version=version, channel="email")
