"""Signed single-use links in review mail: what a token says, and whether it may still decide (DESIGN §6).

A token is Django's ``signing`` of a small JSON object: the escalation, the reviewer it was mailed to, the
decision it makes (approved / rejected), the escalation's ``version`` and a SHA-256 of its arguments (canonical
JSON) when the mail was written, when it expires (the escalation's deadline then) and a random nonce. The
signature (SECRET_KEY, a salt of its own) makes every field tamper-proof; the nonce makes it single use (a used
one is kept in PostgreSQL, ``UsedMailLink``). The link is the credential — the reviewer need not be signed in —
so ``check`` refuses it unless the person it names may still decide that item now.

Opening a link never decides (mail scanners fetch links): the page it opens asks for one click, a POST.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.accounts import roles
from review.models import AuditEvent, Escalation, UsedMailLink

SALT = "review.mail-link"
D = Escalation.Decision
LINK_DECISIONS = (D.APPROVED, D.REJECTED)
# Decisions in words (the model's choices have no translated labels).
DECISION_WORDS = {
    D.APPROVED: gettext_lazy("approved"),
    D.MODIFIED: gettext_lazy("approved with modified arguments"),
    D.TAKEN_OVER: gettext_lazy("taken over"),
    D.REJECTED: gettext_lazy("rejected"),
}
# Where a decision was made (review.actions.CHANNELS), in words.
CHANNEL_WORDS = {
    "web": gettext_lazy("the browser"),
    "api": gettext_lazy("the API"),
    "email": gettext_lazy("e-mail"),
    "chat": gettext_lazy("chat"),
    "bulk": gettext_lazy("a bulk action"),
}


def arguments_hash(arguments: Any) -> str:
    """SHA-256 (hex) of the arguments as canonical JSON: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    """What a valid signature vouches for."""

    escalation_pk: int
    user_pk: int
    decision: str
    version: int
    arguments_hash: str
    expires: datetime
    nonce: str


def make_token(escalation: Escalation, user, decision: str) -> str:
    """A signed link token for ``user`` to make ``decision`` on ``escalation`` as it is now."""
    if decision not in LINK_DECISIONS:
        raise ValueError(f"a mail link approves or rejects, not {decision!r}")
    payload = {
        "e": escalation.pk,
        "u": user.pk,
        "d": decision,
        "v": escalation.version,
        "h": arguments_hash(escalation.arguments),
        "x": int(escalation.deadline_at.timestamp()),
        "n": secrets.token_urlsafe(12),
    }
    return signing.dumps(payload, salt=SALT)


class BadLink(Exception):
    """Not a token we signed, or one whose fields are not what we write (a forgery, a truncated link)."""


def read_token(token: str) -> Link:
    try:
        data = signing.loads(token, salt=SALT)
    except (signing.BadSignature, ValueError, TypeError) as exc:  # a mangled payload is no better than a bad signature
        raise BadLink(str(exc)) from None
    if not isinstance(data, dict) or set(data) != {"e", "u", "d", "v", "h", "x", "n"}:
        raise BadLink("unexpected fields")
    ints = (data["e"], data["u"], data["v"], data["x"])
    if not all(type(value) is int for value in ints) or data["d"] not in LINK_DECISIONS:
        raise BadLink("unexpected values")
    if not (isinstance(data["h"], str) and isinstance(data["n"], str) and 8 <= len(data["n"]) <= 40):
        raise BadLink("unexpected values")
    return Link(
        escalation_pk=data["e"],
        user_pk=data["u"],
        decision=data["d"],
        version=data["v"],
        arguments_hash=data["h"],
        expires=datetime.fromtimestamp(data["x"], tz=UTC),
        nonce=data["n"],
    )


@dataclass
class Verdict:
    """What opening (or pressing) a link may do: ``ok``, or why not — an HTTP status, a title and a sentence the
    page shows, and whether pointing the reader at the approval screen helps."""

    ok: bool
    status: int = 200
    code: str = ""  # bad, used, closed, expired, forbidden, claimed, changed (tests and the page's data-refusal)
    title: str = ""
    message: str = ""
    link: Link | None = None
    escalation: Escalation | None = None
    user: Any = None
    open_screen: bool = False


def _refused(code: str, status: int, title: str, message: str, **rest) -> Verdict:
    return Verdict(False, status=status, code=code, title=title, message=message, **rest)


def when(moment: datetime | None) -> str:
    """A moment in the reader's language and the deployment's time zone."""
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT") if moment else ""


def _who_decided(escalation: Escalation) -> str:
    if escalation.state == Escalation.State.EXPIRED:
        return _("It is closed: nobody decided in time (or its agent stopped waiting), so the safe default applied.")
    decided = AuditEvent.objects.filter(escalation=escalation, event="decided").select_related("actor").last()
    who = escalation.decided_by.get_username() if escalation.decided_by_id else _("someone")
    channel = (decided.data.get("channel") if decided else "") or "web"
    return _("It was already decided (%(decision)s) by %(who)s, from %(channel)s (%(when)s).") % {
        "decision": DECISION_WORDS.get(escalation.decision, escalation.decision),
        "who": who,
        "channel": CHANNEL_WORDS.get(channel, channel),
        "when": when(escalation.decided_at),
    }


def may_decide(user, escalation: Escalation) -> bool:
    """Whether ``user`` may still decide ``escalation`` at all: active, and a reviewer (or expert) of its queue."""
    if user is None or not user.is_active or not roles.can_open(user, "queue"):
        return False
    return escalation.queue != Escalation.Queue.EXPERTS or roles.is_expert(user)


def check(token: str, now: datetime | None = None) -> Verdict:
    """Everything a link needs to be good right now, in the order a reader finds most useful: a forged or
    mangled token, one already used, an item already decided or closed, an expired link, a reviewer who may no
    longer decide, an item someone else is working on, an item that changed since the mail."""
    now = now or timezone.now()
    try:
        link = read_token(token)
    except BadLink:
        message = _("The link is damaged or was not made by agentops. Nothing was decided.")
        return _refused("bad", 400, _("This link is not valid"), message)
    escalation = (
        Escalation.objects.select_related("agent", "decided_by", "claimed_by").filter(pk=link.escalation_pk).first()
    )
    if escalation is None:
        return _refused("bad", 404, _("This escalation is gone"), _("It no longer exists. Nothing was decided."))
    found = {"link": link, "escalation": escalation}
    used = UsedMailLink.objects.filter(nonce=link.nonce).first()
    if used is not None:
        return _refused(
            "used",
            409,
            _("This link was already used"),
            _("Each link in a review mail works once; this one was used (%(decision)s, %(when)s).")
            % {"decision": DECISION_WORDS.get(used.decision, used.decision), "when": when(used.used_at)},
            open_screen=True,
            **found,
        )
    if not escalation.is_open:
        return _refused("closed", 409, _("Already decided"), _who_decided(escalation), open_screen=True, **found)
    if now >= link.expires:
        return _refused(
            "expired",
            410,
            _("This link has expired"),
            _("The link was good until the escalation's deadline. Open the approval screen to see where it stands."),
            open_screen=True,
            **found,
        )
    user = get_user_model().objects.filter(pk=link.user_pk).first()
    if not may_decide(user, escalation):
        return _refused(
            "forbidden",
            403,
            _("You cannot decide this escalation"),
            _("The account this link was mailed to may no longer decide items of this queue."),
            **found,
        )
    found["user"] = user
    claim_held = escalation.claim_expires_at is not None and escalation.claim_expires_at > now
    if escalation.claimed_by_id not in (None, user.pk) and claim_held:
        return _refused(
            "claimed",
            409,
            _("Someone is working on it"),
            _(
                "%(who)s is working on this item right now, so the link cannot decide it. Try again later or open the "
                "approval screen."
            )
            % {"who": escalation.claimed_by.get_username()},
            open_screen=True,
            **found,
        )
    if escalation.version != link.version or arguments_hash(escalation.arguments) != link.arguments_hash:
        return _refused(
            "changed",
            409,
            _("The escalation changed since the mail"),
            _(
                "It is not what the mail showed any more, so the link cannot decide it. Open the approval screen to "
                "see it as it is now."
            ),
            open_screen=True,
            **found,
        )
    if link.decision == D.APPROVED and not escalation.approvable:
        return _refused("bad", 400, _("This link is not valid"), _("There is nothing to approve here."), **found)
    return Verdict(True, link=link, escalation=escalation, user=user)
