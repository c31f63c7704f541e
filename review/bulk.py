"""Bulk decisions: approve or reject many queue rows with one confirmation (issue 18, item 3).

Not one big transaction: every item is decided on its own through ``review.actions.decide`` with
``channel="bulk"`` and the version the reviewer saw, so each gets its own audit event, resumes its own run at
its own commit, and one item that changed meanwhile (claimed by someone else, decided elsewhere, a new
version) is skipped with the reason instead of failing the rest. Two reviewers bulk-deciding overlapping
selections at once still decide every item exactly once: ``decide``'s conditional update is the arbiter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from django.utils.translation import gettext as _

from review import actions
from review.actions import DecisionConflict
from review.models import Escalation

log = structlog.get_logger(__name__)

MAX_ITEMS = 200  # items one bulk request may decide: bounds the request's time and its transactions
BULK_DECISIONS = (Escalation.Decision.APPROVED, Escalation.Decision.REJECTED)


class TooManyItems(ValueError):
    """More than MAX_ITEMS items in one request."""


@dataclass
class Skipped:
    pk: int
    why: str


@dataclass
class BulkOutcome:
    decision: str
    decided: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def check_size(count: int) -> None:
    if count > MAX_ITEMS:
        raise TooManyItems(
            _("%(count)s items selected: one bulk decision takes at most %(max)s. Select fewer and decide again.")
            % {"count": count, "max": MAX_ITEMS}
        )


def not_approvable_reason() -> str:
    return _("an LLM call proposes nothing to approve: take it over or reject it")


def bulk_decide(user, picks: dict[int, int], decision: str, *, comment: str = "") -> BulkOutcome:
    """Decide every item of ``picks`` ({escalation pk: the version the reviewer saw}) as ``decision`` (approved
    or rejected), each once, in its own transaction. Items the user may not see (the expert queue for a
    reviewer) and, for an approval, items with nothing to approve are skipped without being touched; a
    DecisionConflict from ``decide`` skips its item with the reason. Raises TooManyItems past MAX_ITEMS."""
    if decision not in BULK_DECISIONS:
        raise ValueError(f"a bulk decision is approved or rejected, not {decision!r}")
    check_size(len(picks))
    outcome = BulkOutcome(decision)
    visible = {
        pk: approvable
        for pk, approvable in (
            (esc.pk, esc.approvable)
            for esc in Escalation.objects.visible_to(user)
            .filter(pk__in=list(picks))
            .only("pk", "kind", "source", "reason")
        )
    }
    for pk in sorted(picks):
        if pk not in visible:
            # the same words for an expert item and one that does not exist: a reviewer learns nothing of it
            outcome.skipped.append(Skipped(pk, _("not in your queue")))
            continue
        if decision == Escalation.Decision.APPROVED and not visible[pk]:
            outcome.skipped.append(Skipped(pk, not_approvable_reason()))
            continue
        try:
            actions.decide(pk, user, decision, comment=comment, version=picks[pk], channel="bulk")
        except DecisionConflict as conflict:
            outcome.skipped.append(Skipped(pk, str(conflict)))
            continue
        outcome.decided.append(pk)
    log.info(
        "escalation.bulk_decided",
        by=user.pk,
        decision=decision,
        decided=len(outcome.decided),
        skipped=len(outcome.skipped),
    )
    return outcome
