"""What the bulk confirmation, the bulk report and the assign controls show (issue 18, item 3).

The confirmation is advisory: it reads the selected items as they are now and says what a bulk decision
would do with them; review.bulk decides again item by item and reports what it really skipped and why.
Operation names are agent-supplied text: made plain here (presenters.reveal), escaped in the templates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from agentops.accounts import roles
from review.actions import may_be_assigned
from review.bulk import BulkOutcome
from review.models import Escalation
from review.presenters import holder, reveal

OPERATIONS_SHOWN = 8  # distinct operations listed in the confirmation; the rest are counted
SKIPPED_SHOWN = 20  # skipped items named in the report; the rest are counted
ASSIGNEES_SHOWN = 200  # people offered in the assign list


@dataclass
class BulkPreview:
    """What a bulk approve / reject of ``picks`` would do now."""

    action: str  # approve | reject
    picks: dict[int, int]
    selected: int = 0
    will_decide: int = 0
    operations: list[tuple[str, int]] = field(default_factory=list)  # (operation, items) of what will be decided
    more_operations: int = 0
    not_approvable: int = 0  # LLM take-over items (an approval only)
    claimed: list[tuple[str, int]] = field(default_factory=list)  # (who holds them, items)
    changed: int = 0  # decided, expired or changed since they were selected
    unseen: int = 0  # not in this user's queue (the expert queue for a reviewer) or gone

    @property
    def pick_values(self) -> list[str]:
        return [f"{pk}:{version}" for pk, version in sorted(self.picks.items())]

    @property
    def skipped(self) -> int:
        return self.selected - self.will_decide


def bulk_preview(user, picks: dict[int, int], action: str) -> BulkPreview:
    """Count what a bulk ``action`` (approve / reject) of ``picks`` would decide, and what it would skip: the
    items that cannot be approved, the ones someone else holds, the ones that changed, the unseen ones."""
    preview = BulkPreview(action=action, picks=picks, selected=len(picks))
    now = timezone.now()
    rows = (
        Escalation.objects.visible_to(user)
        .filter(pk__in=list(picks))
        .select_related("claimed_by")
        .only(
            "pk",
            "operation",
            "state",
            "version",
            "kind",
            "source",
            "reason",
            "claimed_by__username",
            "claim_expires_at",
        )
    )
    operations: Counter[str] = Counter()
    claimed: Counter[str] = Counter()
    seen = 0
    for esc in rows:
        seen += 1
        held_by, mine = holder(esc, user, now)
        # in the order review.bulk and review.actions.decide find them, so the report says the same
        if action == "approve" and not esc.approvable:
            preview.not_approvable += 1
        elif esc.is_open and held_by and not mine:
            claimed[held_by] += 1
        elif not esc.is_open or esc.version != picks[esc.pk]:
            preview.changed += 1
        else:
            preview.will_decide += 1
            operations[reveal(esc.operation)] += 1
    preview.unseen = preview.selected - seen
    common = operations.most_common()
    preview.operations = common[:OPERATIONS_SHOWN]
    preview.more_operations = sum(n for _, n in common[OPERATIONS_SHOWN:])
    preview.claimed = sorted(claimed.items())
    return preview


@dataclass
class BulkReport:
    ok: bool
    summary: str
    skipped: list[tuple[int, str]]
    more_skipped: int


def bulk_report(outcome: BulkOutcome) -> BulkReport:
    """ "10 approved, 2 skipped" and, for each skipped item, why."""
    decided = len(outcome.decided)
    if outcome.decision == Escalation.Decision.APPROVED:
        done = ngettext("%(count)s approved", "%(count)s approved", decided) % {"count": decided}
    else:
        done = ngettext("%(count)s rejected", "%(count)s rejected", decided) % {"count": decided}
    skipped = len(outcome.skipped)
    if skipped:
        done = _("%(done)s, %(skipped)s skipped:") % {"done": done, "skipped": skipped}
    else:
        done = _("%(done)s.") % {"done": done}
    return BulkReport(
        ok=decided > 0 or not skipped,
        summary=done,
        skipped=[(item.pk, item.why) for item in outcome.skipped[:SKIPPED_SHOWN]],
        more_skipped=max(0, skipped - SKIPPED_SHOWN),
    )


# --- assignment ----------------------------------------------------------------------------------
def assignable_users(escalation: Escalation) -> list:
    """The people this item may be assigned to: active reviewers, experts and superusers; for an item of the
    expert queue, experts and superusers only (review.actions.may_be_assigned says the same of one person)."""
    who = [roles.EXPERT] if escalation.queue == Escalation.Queue.EXPERTS else [roles.REVIEWER, roles.EXPERT]
    people = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name__in=who))
        .distinct()
        .order_by("username")
        .only("pk", "username", "is_superuser", "is_active")[:ASSIGNEES_SHOWN]
    )
    return list(people)


def assignment_context(escalation: Escalation, user) -> dict:
    """The approval screen's assign control: who has the item, whether it is ``user``, and whom it may go to."""
    assignee = escalation.assigned_to if escalation.assigned_to_id else None
    return {
        "assignee": assignee.get_username() if assignee else "",
        "assigned_to_me": assignee is not None and assignee.pk == user.pk,
        "can_assign": escalation.is_open,
        "can_take": escalation.is_open and may_be_assigned(escalation, user),
        "assignees": [(person.pk, person.get_username()) for person in assignable_users(escalation)]
        if escalation.is_open
        else [],
    }
