"""The only code that changes escalations. Every event is audited and announced after commit."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from agentops.accounts import roles
from agentops.lib import live
from agentops.lib.queue import enqueue_on_commit
from agentops.observability import metrics
from agentops.runs.actions import lifecycle as run_lifecycle
from review.models import PRIORITY_ORDER, ActionRequest, AuditEvent, ChatSettings, Escalation
from review.policy import deadline_of, evaluate, policy_for, verdict_for_reason

log = structlog.get_logger(__name__)

CLAIM_SECONDS = 300
D = Escalation.Decision
WAITER_GAVE_UP = "waiter_gave_up"  # the audit event of an item closed because its waiter stopped waiting
NOTICE_NEW, NOTICE_REMINDER = "new", "reminder"  # what review.notify tells the channels
# Where a decision was made; the audit event names it ("Every channel decides through the same action").
CHANNELS = ("web", "api", "email", "chat", "bulk")


class DecisionConflict(Exception):
    """Someone else claimed or decided this escalation first (or it expired). The message says who/what."""


def _audit(escalation: Escalation, event: str, actor=None, **data) -> None:
    AuditEvent.objects.create(escalation=escalation, event=event, actor=actor, data=data)


def record_channel_event(escalation_id: int, event: str, **data) -> None:
    """Audit what a channel did with an escalation outside a decision (``posted_to_chat``: the message went
    out, or why it did not), so the approval screen's log shows where the item was announced."""
    AuditEvent.objects.create(escalation_id=escalation_id, event=event, data=data)


def save_chat_settings(row: ChatSettings) -> ChatSettings:
    """Validate (ValidationError, nothing saved: a webhook URL the outbound guard refuses) and save the chat
    settings' one row."""
    with transaction.atomic():
        row.full_clean()
        row.save()
    return row


def _announce(escalation: Escalation, event: str) -> None:
    data = {"escalation": escalation.pk, "state": escalation.state, "queue": escalation.queue}
    live.publish("review.queue", event, data)
    if escalation.queue == Escalation.Queue.EXPERTS or event == "escalation.to_experts":
        live.publish("review.experts", event, data)


@transaction.atomic
def create_escalation(
    *,
    operation: str,
    reason: str,
    priority: str,
    deadline_seconds: int,
    run=None,
    step_seq: int | None = None,
    agent=None,
    session_id: str = "",
    source: str = "run",
    kind: str = "tool",
    arguments: dict | None = None,
    value: float | None = None,
    confidence: float | None = None,
    retry_count: int = 0,
    context: dict | None = None,
    rule: str = "",
) -> Escalation:
    escalation = Escalation.objects.create(
        run=run,
        step_seq=step_seq,
        agent=agent,
        session_id=session_id,
        source=source,
        kind=kind,
        operation=operation,
        arguments=arguments or {},
        value=value,
        confidence=confidence,
        retry_count=retry_count,
        context=context or {},
        reason=reason,
        priority=priority,
        priority_rank=PRIORITY_ORDER.get(priority, 1),
        rule=rule[:200],
        deadline_at=timezone.now() + timedelta(seconds=deadline_seconds),
        team=getattr(agent, "team", "") or "",
    )
    _audit(escalation, "created", reason=reason, priority=priority, rule=rule)
    _announce(escalation, "escalation.created")
    # The channels beyond the browser (e-mail, chat) hear of it from a task, after commit (review.channels).
    enqueue_on_commit("review.notify", escalation.pk, NOTICE_NEW, robust=True)
    transaction.on_commit(lambda: metrics.ESCALATIONS.labels(reason=reason, priority=priority).inc())
    log.info("escalation.created", escalation=escalation.pk, reason=reason, priority=priority, operation=operation)
    return escalation


@transaction.atomic
def request_action(
    agent,
    *,
    operation: str,
    session_id: str = "",
    arguments: dict | None = None,
    value: float | None = None,
    confidence: float | None = None,
    retry_count: int = 0,
    context: dict | None = None,
) -> ActionRequest:
    """An agent asks permission over the API. The escalation policy decides: no rule fires → approved at
    once (recorded, so what agents were allowed to do stays auditable); a rule fires → pending, with an
    escalation (source "api", no run) whose decision the agent then reads. A policy row's auto decision
    answers at once: approved, or rejected (its rule names the row)."""
    verdict = evaluate(agent.name, operation, value=value, confidence=confidence, retry_count=retry_count)
    escalation = None
    if verdict.escalate:
        escalation = create_escalation(
            operation=operation,
            reason=verdict.reason,
            priority=verdict.priority,
            deadline_seconds=verdict.deadline_seconds,
            agent=agent,
            session_id=session_id,
            source="api",
            kind="tool",
            arguments=arguments,
            value=value,
            confidence=confidence,
            retry_count=retry_count,
            context=context,
            rule=verdict.rule or "",
        )
    action = ActionRequest.objects.create(
        agent=agent,
        session_id=session_id,
        operation=operation,
        arguments=arguments or {},
        value=value,
        confidence=confidence,
        retry_count=retry_count,
        context=context or {},
        status=ActionRequest.Status.PENDING
        if escalation
        else (ActionRequest.Status.REJECTED if verdict.reject else ActionRequest.Status.APPROVED),
        reason=verdict.reason or "",
        priority=verdict.priority or "",
        rule=(verdict.rule or "")[:200],
        escalation=escalation,
    )
    log.info(
        "action.requested",
        action=action.pk,
        agent=agent.name,
        operation=operation,
        status=action.status,
        escalation=escalation.pk if escalation else None,
    )
    return action


GATEWAY_WAITER = "gateway"  # context["waiter"] of an item a gateway hold waits for (see close_orphaned_holds)


@transaction.atomic
def hold_gateway_call(
    agent,
    *,
    reason: str,
    operation: str,
    hold_seconds: float,
    session_id: str = "",
    arguments: dict | None = None,
    context: dict | None = None,
) -> Escalation:
    """A gateway call whose answer waits for a reviewer (its agent's ``gateway_human`` is ``hold``): a budget
    set to escalate blocked it (``budget_exceeded``: approve lets it go ahead once, past the block) or every
    fallback failed (``all_fallbacks_failed``). Either way the reviewer may write the answer (take over) or
    reject it. The item (source ``gateway``, kind ``llm``) is due when the hold ends, since nobody acts on a
    decision after that; the hold closes it then (``close_unwaited``), beat if the hold vanished."""
    verdict = verdict_for_reason(agent.name, operation, reason)
    return create_escalation(
        operation=operation,
        reason=reason,
        priority=verdict.priority,
        deadline_seconds=max(1, min(verdict.deadline_seconds, round(hold_seconds))),
        agent=agent,
        session_id=session_id,
        source="gateway",
        kind="llm",
        arguments=arguments,
        context={**(context or {}), "waiter": GATEWAY_WAITER},
        rule=verdict.rule or "",
    )


def _claimable_by(user, now) -> Q:
    return Q(claimed_by__isnull=True) | Q(claimed_by=user) | Q(claim_expires_at__lt=now)


@transaction.atomic
def claim(escalation_id: int, user) -> Escalation:
    """Take the item for CLAIM_SECONDS so two reviewers do not work the same one (renews your own claim)."""
    now = timezone.now()
    updated = (
        Escalation.objects.filter(pk=escalation_id, state__in=Escalation.OPEN_STATES)
        .filter(_claimable_by(user, now))
        .update(
            state=Escalation.State.CLAIMED,
            claimed_by=user,
            claim_expires_at=now + timedelta(seconds=CLAIM_SECONDS),
        )
    )
    escalation = Escalation.objects.select_related("claimed_by").get(pk=escalation_id)
    if not updated:
        raise DecisionConflict(_why_not_open(escalation, user))
    _audit(escalation, "claimed", user)
    _announce(escalation, "escalation.claimed")
    return escalation


@transaction.atomic
def release(escalation_id: int, user, *, lease: str | None = None) -> Escalation:
    """Give the item back if ``user`` holds it; with ``lease`` (Escalation.lease, what a leaving page names)
    only if that very claim still holds it, so a reload that claimed again meanwhile keeps it."""
    query = Escalation.objects.filter(pk=escalation_id, state=Escalation.State.CLAIMED, claimed_by=user)
    if lease is not None:
        expires = _parsed_lease(lease)
        query = query.filter(claim_expires_at=expires) if expires else query.none()
    updated = query.update(state=Escalation.State.PENDING, claimed_by=None, claim_expires_at=None)
    escalation = Escalation.objects.get(pk=escalation_id)
    if updated:
        _audit(escalation, "released", user)
        _announce(escalation, "escalation.released")
    return escalation


def _parsed_lease(lease: str) -> datetime | None:
    try:
        expires = datetime.fromisoformat(lease)
    except ValueError:
        return None
    return expires if expires.tzinfo else None


class AssignmentRefused(ValueError):
    """The chosen assignee may not work this item (not an active reviewer, or a reviewer for an expert item)."""


def may_be_assigned(escalation: Escalation, assignee) -> bool:
    """Whether ``assignee`` may be given ``escalation``: an active user who opens the queue (a reviewer, an
    expert, a superuser); an item of the expert queue only to an expert (or a superuser)."""
    if not roles.can_open(assignee, "queue"):
        return False
    return escalation.queue != Escalation.Queue.EXPERTS or roles.is_expert(assignee)


@transaction.atomic
def assign(escalation_id: int, user, assignee) -> Escalation:
    """Say whose item this is (``assignee`` a user, or None to unassign), audited as ``assigned`` (who assigned
    whom) and announced. An assignment is not a claim: it never expires, it holds nothing, and anyone who may
    decide the item still can (a claim is what keeps two people apart). Like a claim it leaves the version
    alone (Escalation.version), so a form, a bulk selection or a mailed link someone holds stays valid.
    Raises DecisionConflict for an item no longer open, AssignmentRefused for an assignee it may not have."""
    escalation = Escalation.objects.select_for_update(of=("self",)).select_related("assigned_to").get(pk=escalation_id)
    if not escalation.is_open:
        raise DecisionConflict(_why_not_open(escalation, user))
    if assignee is not None and not may_be_assigned(escalation, assignee):
        if escalation.queue == Escalation.Queue.EXPERTS and roles.can_open(assignee, "queue"):
            raise AssignmentRefused(_("This item is in the expert queue: only an expert can take it."))
        raise AssignmentRefused(_("%(user)s is not an active reviewer.") % {"user": assignee.get_username()})
    previous = escalation.assigned_to
    if (previous.pk if previous else None) == (assignee.pk if assignee else None):
        return escalation  # nothing changes: no event, no announcement
    escalation.assigned_to = assignee
    escalation.save(update_fields=["assigned_to"])
    _audit(
        escalation,
        "assigned",
        user,
        assignee=assignee.get_username() if assignee else None,
        previous=previous.get_username() if previous else None,
    )
    _announce(escalation, "escalation.assigned")
    log.info("escalation.assigned", escalation=escalation.pk, by=user.pk, assignee=assignee.pk if assignee else None)
    return escalation


def _why_not_open(escalation: Escalation, user) -> str:
    if escalation.state == Escalation.State.DECIDED:
        who = escalation.decided_by.get_username() if escalation.decided_by else _("someone")
        return _("Already decided (%(decision)s) by %(who)s. Your input was not applied.") % {
            "decision": escalation.get_decision_display() if _is_translated() else escalation.decision,
            "who": who,
        }
    expired = escalation.state == Escalation.State.EXPIRED
    gave_up = escalation.events.filter(event=WAITER_GAVE_UP).last() if expired else None
    if gave_up is not None:
        return _(
            "Already closed: the agent stopped waiting (%(channel)s) before anyone decided, so nothing would act "
            "on a decision. Your input was not applied."
        ) % {"channel": gave_up.data.get("channel", "?")}
    if escalation.state == Escalation.State.EXPIRED:
        return _("This escalation expired and the safe default (reject) was applied.")
    if escalation.claimed_by_id and escalation.claimed_by_id != getattr(user, "pk", None):
        return _("%(who)s is working on this item right now.") % {"who": escalation.claimed_by.get_username()}
    return _("This item changed meanwhile; reload it to see its current state.")


def _is_translated() -> bool:
    """Whether the words go to a person reading another language than English (the API and logs keep the
    machine's words: "approved", not "Approved")."""
    return (get_language() or "en") != "en"


@transaction.atomic
def decide(
    escalation_id: int,
    user,
    decision: str,
    *,
    arguments: dict | None = None,
    result=None,
    comment: str = "",
    confidence: int | None = None,
    version: int | None = None,
    channel: str = "web",
) -> Escalation:
    """Accept one decision, exactly once (conditional update on state, claim and version); the run resumes.
    ``channel`` (one of CHANNELS) is where the reviewer decided: the browser, e-mail, chat, a bulk action."""
    if decision not in D.values:
        raise ValueError(f"unknown decision {decision!r}")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if decision == D.MODIFIED and not isinstance(arguments, dict):
        raise ValueError("a modification needs the new arguments as a JSON object")
    now = timezone.now()
    query = Escalation.objects.filter(pk=escalation_id, state__in=Escalation.OPEN_STATES).filter(
        _claimable_by(user, now)
    )
    if version is not None:
        query = query.filter(version=version)
    updated = query.update(
        state=Escalation.State.DECIDED,
        decision=decision,
        final_arguments=arguments if decision == D.MODIFIED else None,
        result=result if decision == D.TAKEN_OVER else None,
        comment=comment,
        reviewer_confidence=confidence,
        decided_by=user,
        decided_at=now,
        claimed_by=None,
        claim_expires_at=None,
        version=F("version") + 1,
    )
    escalation = Escalation.objects.select_related("decided_by", "claimed_by").get(pk=escalation_id)
    if not updated:
        raise DecisionConflict(_why_not_open(escalation, user))
    _audit(
        escalation,
        "decided",
        user,
        decision=decision,
        comment=comment,
        confidence=confidence,
        arguments=arguments if decision == D.MODIFIED else None,
        channel=channel,
    )
    _resume(escalation)
    _announce(escalation, "escalation.decided")
    waited = (now - escalation.created_at).total_seconds()
    transaction.on_commit(lambda: metrics.DECISION_SECONDS.labels(decision=decision).observe(waited))
    return escalation


def _resume(escalation: Escalation) -> None:
    """Hand the decision to the suspended run (its step replays with it when the run resumes)."""
    if escalation.run_id is None or escalation.step_seq is None:
        return
    run_lifecycle.decide_step(
        escalation.run_id,
        escalation.step_seq,
        {
            "decision": escalation.decision,
            "arguments": escalation.final_arguments,
            "result": escalation.result,
            "comment": escalation.comment,
            "escalation": escalation.pk,
            "expired": escalation.state == Escalation.State.EXPIRED,  # nobody decided: never "a reviewer rejected"
        },
    )


@transaction.atomic
def close_unwaited(escalation_id: int, *, channel: str, waited: float, why: str = "") -> Escalation:
    """The agent stopped waiting for this item (``channel``: the gateway's hold, the API / client wait):
    close it now — expired, with the safe default (reject) — so that no reviewer decides what nobody will
    act on any more. An item already closed (a decision won the race) is returned unchanged."""
    escalation = Escalation.objects.select_for_update().get(pk=escalation_id)
    if not escalation.is_open:
        return escalation
    escalation.state = Escalation.State.EXPIRED
    escalation.decision = D.REJECTED
    escalation.comment = _(
        "No reviewer decided within %(seconds)s s and the agent stopped waiting (%(channel)s): closed, the safe "
        "default (reject) applied."
    ) % {"seconds": f"{waited:g}", "channel": channel}
    escalation.decided_at = timezone.now()
    escalation.claimed_by, escalation.claim_expires_at = None, None
    escalation.version += 1
    escalation.save()
    _audit(escalation, WAITER_GAVE_UP, None, channel=channel, waited_seconds=waited, why=why, decision=D.REJECTED)
    _resume(escalation)
    _announce(escalation, "escalation.expired")
    log.info("escalation.waiter_gave_up", escalation=escalation.pk, channel=channel, waited=waited)
    return escalation


@transaction.atomic
def escalate_to_expert(escalation_id: int, user, *, comment: str = "", system: bool = False) -> Escalation:
    """Move the item to the expert queue with a fresh deadline — once: an item already there keeps its
    deadline, so passing it around cannot keep it open past what its waiter was promised."""
    now = timezone.now()
    escalation = Escalation.objects.select_for_update().get(pk=escalation_id)
    if not escalation.is_open or (
        not system
        and escalation.claimed_by_id not in (None, user.pk)
        and escalation.claim_expires_at
        and escalation.claim_expires_at > now
    ):
        raise DecisionConflict(_why_not_open(escalation, user))
    if escalation.queue != Escalation.Queue.EXPERTS:
        policy = policy_for(escalation.agent.name if escalation.agent_id else None, escalation.operation)
        escalation.escalated_at = now
        escalation.deadline_at = now + timedelta(seconds=deadline_of(policy))
    escalation.queue = Escalation.Queue.EXPERTS
    escalation.state = Escalation.State.PENDING
    if escalation.assigned_to_id and not roles.is_expert(escalation.assigned_to):
        escalation.assigned_to = None  # a reviewer cannot even see it now: it is the experts' to take
    escalation.claimed_by, escalation.claim_expires_at = None, None
    escalation.reminded_at = None  # the experts get their own reminder before their deadline
    escalation.version += 1
    escalation.save()
    _audit(escalation, "escalated_to_expert", None if system else user, comment=comment, automatic=system)
    _announce(escalation, "escalation.to_experts")
    if escalation.escalated_at == now:  # it just arrived in the expert queue: the experts' mail and chat hear of it
        enqueue_on_commit("review.notify", escalation.pk, NOTICE_NEW, robust=True)
    return escalation


HOLD_GRACE_SECONDS = 30  # a hold closes its own items at its end; beat only catches the ones whose hold vanished


def close_orphaned_holds() -> list[int]:
    """Beat: a gateway hold (a held tool call, or a call held for the human in the gateway) closes its
    undecided items when it ends; an item still open well after the longest hold (GATEWAY_HOLD_SECONDS)
    lost its hold — the web process stopped — so nobody waits for it: close it the same way."""
    since = timezone.now() - timedelta(seconds=settings.GATEWAY_HOLD_SECONDS + HOLD_GRACE_SECONDS)
    orphans = Escalation.objects.filter(
        state__in=Escalation.OPEN_STATES, context__waiter=GATEWAY_WAITER, created_at__lt=since
    )
    closed = []
    for pk in orphans.values_list("pk", flat=True):
        try:
            close_unwaited(
                pk, channel="gateway", waited=settings.GATEWAY_HOLD_SECONDS, why="the hold waiting for it is gone"
            )
        except Exception:
            log.exception("escalation.close_orphan_failed", escalation=pk)
            continue
        closed.append(pk)
    return closed


def due_for_reminder(now=None) -> list[int]:
    """The open items whose deadline is closer than REVIEW_REMINDER_SECONDS and that were not reminded yet,
    each marked reminded (once per item and queue) so two beats never remind twice."""
    now = now or timezone.now()
    lead = timedelta(seconds=settings.REVIEW_REMINDER_SECONDS)
    with transaction.atomic():
        rows = (
            Escalation.objects.select_for_update(skip_locked=True)
            .filter(state__in=Escalation.OPEN_STATES, reminded_at__isnull=True, deadline_at__gt=now)
            .filter(deadline_at__lte=now + lead)
            .values_list("pk", "deadline_at", "created_at", "escalated_at", "queue")
        )
        # A short deadline is not reminded at its start: only in its last quarter, at most `lead` before it ends.
        queues = {
            pk: queue
            for pk, deadline, created, escalated, queue in rows
            if (deadline - now) * 4 <= deadline - (escalated or created)
        }
        due = list(queues)
        if due:
            Escalation.objects.filter(pk__in=due).update(reminded_at=now)
            for pk in due:
                AuditEvent.objects.create(escalation_id=pk, event="reminded", data={})
                enqueue_on_commit("review.notify", pk, NOTICE_REMINDER, robust=True)
    for pk in due:
        live.publish("review.queue", "escalation.reminded", {"escalation": pk})
        if queues[pk] == Escalation.Queue.EXPERTS:  # the experts-only page listens on its own group
            live.publish("review.experts", "escalation.reminded", {"escalation": pk})
    return due


def expire_overdue() -> dict:
    """Beat: an overdue item goes to the expert queue once; overdue again, the safe default (reject)
    applies and the run resumes with it. One item failing never stops the others. Items a vanished gateway
    hold was waiting for are closed first (close_orphaned_holds)."""
    outcomes: dict[str, list[int]] = {"to_experts": [], "expired": []}
    if orphans := close_orphaned_holds():
        outcomes["unwaited"] = orphans
    overdue = Escalation.objects.filter(state__in=Escalation.OPEN_STATES, deadline_at__lt=timezone.now())
    for pk in overdue.values_list("pk", flat=True):
        try:
            outcome = _expire_one(pk)
        except Exception:
            log.exception("escalation.expire_failed", escalation=pk)
            continue
        if outcome:
            outcomes[outcome].append(pk)
    return outcomes


@transaction.atomic
def _expire_one(pk: int) -> str | None:
    escalation = Escalation.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
    if escalation is None or not escalation.is_open or escalation.deadline_at >= timezone.now():
        return None
    if escalation.escalated_at is None:
        escalate_to_expert(pk, None, comment="deadline passed", system=True)
        return "to_experts"
    escalation.state = Escalation.State.EXPIRED
    escalation.decision = D.REJECTED
    escalation.comment = "Expired twice without a decision: the safe default (reject) applied."
    escalation.decided_at = timezone.now()
    escalation.claimed_by, escalation.claim_expires_at = None, None
    escalation.version += 1
    escalation.save()
    _audit(escalation, "expired", None, decision=D.REJECTED)
    _resume(escalation)
    _announce(escalation, "escalation.expired")
    return "expired"


@transaction.atomic
def withdraw_for_run(run_pk: int, *, why: str) -> int:
    """Close the open escalations of a run that will not resume (it was cancelled)."""
    withdrawn = 0
    for escalation in Escalation.objects.select_for_update().filter(run_id=run_pk, state__in=Escalation.OPEN_STATES):
        escalation.state = Escalation.State.EXPIRED
        escalation.comment = f"Withdrawn: {why}"
        escalation.claimed_by, escalation.claim_expires_at = None, None
        escalation.version += 1
        escalation.save()
        _audit(escalation, "withdrawn", None, why=why)
        _announce(escalation, "escalation.withdrawn")
        withdrawn += 1
    if withdrawn:
        return withdrawn
