"""Escalations: requests for a human decision, the policy that creates them, and their audit log."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Cast, Concat, Left, Upper
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from agentops.accounts import roles
from agentops.lib import netguard
from agentops.runs.models import Agent, Run


class Priority(models.TextChoices):
    HIGH = "high", _("High")
    MEDIUM = "medium", _("Medium")
    LOW = "low", _("Low")


PRIORITY_ORDER = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
SEARCH_CHARS = 4000  # characters of an escalation's arguments the queue's search reads
OPEN_ITEMS = models.Q(state__in=("pending", "claimed"))  # Escalation.OPEN_STATES, for the partial indexes


class Reason(models.TextChoices):
    LOW_CONFIDENCE = "low_confidence", _("Low Confidence")
    SENSITIVE_OPERATION = "sensitive_operation", _("Sensitive Operation")
    HIGH_VALUE_DECISION = "high_value_decision", _("High Value Decision")
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded", _("Max Retries Exceeded")
    ALL_FALLBACKS_FAILED = "all_fallbacks_failed", _("All Fallbacks Failed")
    BUDGET_EXCEEDED = "budget_exceeded", _("Budget Exceeded")


class AutoDecision(models.TextChoices):
    """What a policy row decides at once, before (instead of) its escalation rules."""

    NONE = "", _("none: the rules decide")
    APPROVE = "approve", _("auto-approve")
    REJECT = "reject", _("auto-reject")


def priority_field(verbose_name, default: str) -> models.CharField:
    """A policy's priority for the items of one reason."""
    return models.CharField(verbose_name, max_length=10, choices=Priority.choices, default=default)


def reviewer_link(verbose_name) -> models.ForeignKey:
    """Who claimed, decided or was assigned an item: kept (as nobody) when the user is deleted."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=verbose_name,
    )


# ActionRequest.reason / the run step's verdict when a row's auto decision answered (no escalation is made).
AUTO_APPROVED, AUTO_REJECTED = "auto_approved", "auto_rejected"


class EscalationPolicy(models.Model):
    """Thresholds and priorities. The most specific enabled row applies: agent + operation, then agent,
    then operation, then the global row (both blank). A row may also decide at once (``auto_decision``):
    auto-approve (below ``auto_approve_below`` when set) or auto-reject, whatever rule would fire."""

    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        help_text=_("blank = every agent"),
        verbose_name=_("agent"),
    )
    operation = models.CharField(
        _("operation"),
        max_length=100,
        blank=True,
        help_text=_("tool or operation name; blank = every one"),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    low_confidence_below = models.FloatField(
        _("low confidence below"),
        default=0.7,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
    )
    high_value_above = models.FloatField(_("high value above"), default=1000.0, validators=[MinValueValidator(0)])
    max_retries = models.PositiveSmallIntegerField(_("max retries"), default=3)
    # The column keeps its first name; since issue 17 it lists words matched anywhere in the name (review.policy).
    sensitive_prefixes = models.CharField(
        _("sensitive words"),
        max_length=300,
        default="delete,modify,send",
        blank=True,
        help_text=_(
            "Comma-separated words. An operation is sensitive when one of them is a word of its name, anywhere: "
            "the name is split on _ - . / and case changes (gmail_send_message, bulk_delete, sendEmail, "
            "files/delete all match; sender_lookup and undeleted_items do not)."
        ),
    )
    deadline_seconds = models.PositiveIntegerField(
        _("deadline (s)"),
        null=True,
        blank=True,
        default=None,
        validators=[MinValueValidator(5)],
        help_text=_(
            "Seconds a reviewer has to decide; blank = the runtime settings' human timeout (600 s by default)."
        ),
    )
    priority_sensitive_operation = priority_field(_("sensitive operation"), Priority.HIGH)
    priority_high_value_decision = priority_field(_("high value decision"), Priority.HIGH)
    priority_low_confidence = priority_field(_("low confidence"), Priority.MEDIUM)
    priority_max_retries_exceeded = priority_field(_("max retries exceeded"), Priority.LOW)
    priority_all_fallbacks_failed = priority_field(_("all fallbacks failed"), Priority.HIGH)
    priority_budget_exceeded = priority_field(_("budget exceeded"), Priority.HIGH)
    auto_decision = models.CharField(
        _("auto decision"),
        max_length=10,
        choices=AutoDecision.choices,
        blank=True,
        default=AutoDecision.NONE,
        help_text=_(
            "Decide at once instead of asking a reviewer: auto-approve (below the value limit, when one is set) "
            "or auto-reject. Failed model calls and blocked budgets still go to a reviewer."
        ),
    )
    auto_approve_below = models.FloatField(
        _("auto-approve below value"),
        null=True,
        blank=True,
        help_text=_(
            "With auto-approve: only requests whose value is below this are approved at once; requests at or "
            "above it, or with no value, follow the rules. Blank = every request, whatever its value."
        ),
    )

    class Meta:
        verbose_name = _("escalation policy")
        verbose_name_plural = _("escalation policies")
        constraints = [
            models.UniqueConstraint(fields=["agent", "operation"], name="policy_scope", nulls_distinct=False)
        ]

    def __str__(self) -> str:
        return gettext("policy for %(agent)s / %(operation)s") % {
            "agent": self.agent or gettext("every agent"),
            "operation": self.operation or gettext("every operation"),
        }

    def clean(self) -> None:
        if self.auto_approve_below is not None and self.auto_decision != AutoDecision.APPROVE:
            raise ValidationError({"auto_approve_below": _("A value limit only applies to auto-approve.")})


class EscalationQuerySet(models.QuerySet):
    def visible_to(self, user) -> EscalationQuerySet:
        """The escalations `user` may see: an expert-queue item (escalated, or expired through the expert
        queue) only by experts. Every page and export that shows escalations starts from this."""
        if roles.is_expert(user):
            return self
        return self.exclude(queue=Escalation.Queue.EXPERTS)


class Escalation(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        CLAIMED = "claimed", _("Claimed")
        DECIDED = "decided", _("Decided")
        EXPIRED = "expired", _("Expired")

    class Queue(models.TextChoices):
        REVIEWERS = "reviewers", _("Reviewers")
        EXPERTS = "experts", _("Experts")

    class Decision(models.TextChoices):
        APPROVED = "approved", _("Approved")
        MODIFIED = "modified", _("Modified")
        TAKEN_OVER = "taken_over", _("Taken Over")
        REJECTED = "rejected", _("Rejected")

    OPEN_STATES = (State.PENDING, State.CLAIMED)

    run = models.ForeignKey(
        Run, models.CASCADE, null=True, blank=True, related_name="escalations", verbose_name=_("run")
    )
    step_seq = models.PositiveIntegerField(_("step"), null=True, blank=True)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="escalations",
        verbose_name=_("agent"),
    )
    session_id = models.CharField(_("session"), max_length=200, blank=True)
    source = models.CharField(max_length=20, default="run", verbose_name=_("source"))  # run | api | budget | gateway
    kind = models.CharField(max_length=10, default="tool", verbose_name=_("kind"))  # tool | llm
    operation = models.CharField(_("operation"), max_length=100)
    arguments = models.JSONField(_("arguments"), default=dict, blank=True)
    value = models.FloatField(_("value"), null=True, blank=True)
    confidence = models.FloatField(_("confidence"), null=True, blank=True)
    retry_count = models.PositiveIntegerField(_("retries"), default=0)
    context = models.JSONField(
        _("context"),
        default=dict,
        blank=True,
        help_text=_("user_input, agent_analysis, suggestions, ..."),
    )
    reason = models.CharField(_("reason"), max_length=40, choices=Reason.choices)
    rule = models.CharField(_("rule"), max_length=200, blank=True)
    priority = models.CharField(_("priority"), max_length=10, choices=Priority.choices, db_index=True)
    priority_rank = models.PositiveSmallIntegerField(_("priority rank"), default=1, db_index=True)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    queue = models.CharField(_("queue"), max_length=10, choices=Queue.choices, default=Queue.REVIEWERS, db_index=True)
    deadline_at = models.DateTimeField(_("deadline"))
    escalated_at = models.DateTimeField(_("escalated at"), null=True, blank=True)
    claimed_by = reviewer_link(_("claimed by"))
    claim_expires_at = models.DateTimeField(_("claim expires at"), null=True, blank=True)
    decision = models.CharField(_("decision"), max_length=12, choices=Decision.choices, blank=True)
    final_arguments = models.JSONField(_("final arguments"), null=True, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    reviewer_confidence = models.PositiveSmallIntegerField(
        _("reviewer confidence"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
    )
    decided_by = reviewer_link(_("decided by"))
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    # What the item says (state, queue, decision, arguments): a decision made from a form, a bulk selection,
    # a mailed link or a chat button names the version it was shown and is refused if it moved on. Claims and
    # releases do not move it: who is looking at an item is not a change of the item (claimed_by keeps two
    # reviewers apart), so a reviewer's mail link still works after they opened the item in the browser.
    version = models.PositiveIntegerField(_("version"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    # The agent's team when the item was created: per-team queues route on it (ReviewerProfile.teams).
    team = models.SlugField(_("team"), max_length=80, blank=True, db_index=True)
    # Who should decide it ("assign to me / to a reviewer"); unlike a claim, an assignment does not expire.
    assigned_to = reviewer_link(_("assigned to"))
    # When the reminder before the deadline went out (once per item and queue; reset on escalation to experts).
    reminded_at = models.DateTimeField(_("reminded at"), null=True, blank=True)
    # What the queue's free-text search reads (besides the agent's name): the operation, the session and the
    # arguments as JSON text, kept by PostgreSQL itself. Cut at SEARCH_CHARS so one huge argument list does
    # not bloat the trigram index; the start of the arguments is what a reviewer searches for.
    search_text = models.GeneratedField(
        expression=Concat(
            "operation",
            models.Value(" "),
            "session_id",
            models.Value(" "),
            Left(Cast("arguments", models.TextField()), SEARCH_CHARS),
        ),
        output_field=models.TextField(),
        db_persist=True,
        verbose_name=_("search text"),
    )

    objects = EscalationQuerySet.as_manager()

    class Meta:
        ordering = ["priority_rank", "created_at"]
        verbose_name = _("escalation")
        verbose_name_plural = _("escalations")
        indexes = [
            models.Index(fields=["state", "queue", "priority_rank", "created_at"], name="queue_order"),
            # The queue's sort orders over open items only (a small part of all items): a page is read in
            # order from one of these instead of sorting every open item (state IN (...) defeats queue_order's
            # ordering). Measured in tests/bench/bench_queue.py.
            models.Index(fields=["priority_rank", "created_at", "id"], condition=OPEN_ITEMS, name="open_by_priority"),
            models.Index(fields=["created_at", "id"], condition=OPEN_ITEMS, name="open_by_age"),
            models.Index(fields=["deadline_at", "id"], condition=OPEN_ITEMS, name="open_by_deadline"),
            # `search_text__icontains` is UPPER(search_text) LIKE UPPER('%…%'): a trigram index on exactly
            # that expression answers it without reading every row (pg_trgm, created by the migration).
            GinIndex(OpClass(Upper("search_text"), name="gin_trgm_ops"), name="escalation_search_trgm"),
        ]

    def __str__(self) -> str:
        return gettext("escalation %(id)s (%(reason)s, %(state)s)") % {
            "id": self.pk,
            "reason": self.get_reason_display(),
            "state": self.get_state_display(),
        }

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    @property
    def lease(self) -> str:
        """Which claim holds the item (its expiry, to the microsecond: each claim or renewal sets a new one), so
        a page that leaves releases only the claim it made, not the one a reload of the page made since."""
        return self.claim_expires_at.isoformat() if self.claim_expires_at else ""

    @property
    def approvable(self) -> bool:
        """Whether "approve" means something: a proposed tool call runs as proposed, or a gateway call that a
        budget blocked goes ahead once, past the block. An LLM call whose every fallback failed proposes
        nothing to approve: a reviewer writes the answer (take over) or rejects it."""
        return self.kind != "llm" or (self.source == "gateway" and self.reason == Reason.BUDGET_EXCEEDED)

    @property
    def modifiable(self) -> bool:
        """Whether the reviewer may change the arguments: only a tool call has arguments to run with."""
        return self.kind != "llm"


class ReviewerProfile(models.Model):
    """How one reviewer wants to hear of escalations outside the browser, and which teams' queues are theirs."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="reviewer_profile",
        verbose_name=_("user"),
    )
    teams = models.CharField(
        _("teams"),
        max_length=300,
        blank=True,
        help_text=_("Comma-separated team slugs whose escalations this reviewer works; blank = every team."),
    )
    email_opt_in = models.BooleanField(_("e-mail me new escalations"), default=False)
    email_priorities = models.CharField(
        _("priorities to e-mail"),
        max_length=30,
        blank=True,
        default="high,medium,low",
        help_text=_("Comma-separated: high, medium, low."),
    )
    email_reminders = models.BooleanField(_("e-mail me a reminder before a deadline"), default=True)
    chat_user_id = models.CharField(
        _("chat user id"),
        max_length=64,
        blank=True,
        help_text=_("Your Slack (or Slack-compatible) user id, e.g. U024BE7LH: buttons you press in chat act as you."),
    )
    # The language of the mail (and chat texts) this reviewer gets; blank = the deployment's LANGUAGE_CODE.
    language = models.CharField(_("language"), max_length=10, blank=True, choices=settings.LANGUAGES)

    class Meta:
        verbose_name = _("reviewer profile")
        verbose_name_plural = _("reviewer profiles")
        constraints = [
            models.UniqueConstraint(
                fields=["chat_user_id"], condition=~models.Q(chat_user_id=""), name="reviewer_chat_user_once"
            )
        ]

    def __str__(self) -> str:
        return gettext("review profile of %(user)s") % {"user": self.user}

    def team_list(self) -> list[str]:
        return [team.strip() for team in self.teams.split(",") if team.strip()]

    def priority_list(self) -> list[str]:
        return [item.strip() for item in self.email_priorities.split(",") if item.strip()]


class MailDelivery(models.Model):
    """One mail about one escalation to one reviewer. A notice ("new", "reminder") goes to a reviewer once per
    queue the item is in: the row is written before the mail is sent, so a redelivered task never sends it twice."""

    escalation = models.ForeignKey(
        Escalation, on_delete=models.CASCADE, related_name="mailings", verbose_name=_("escalation")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("reviewer")
    )
    notice = models.CharField(_("notice"), max_length=10)
    queue = models.CharField(_("queue"), max_length=10, choices=Escalation.Queue.choices)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("mail delivery")
        verbose_name_plural = _("mail deliveries")
        constraints = [
            models.UniqueConstraint(fields=["escalation", "user", "notice", "queue"], name="mail_once_per_notice")
        ]

    def __str__(self) -> str:
        return gettext("%(notice)s mail of escalation %(escalation)s to user %(user)s") % {
            "notice": self.notice,
            "escalation": self.escalation_id,
            "user": self.user_id,
        }


class UsedMailLink(models.Model):
    """A signed e-mail link that decided an escalation (review/channels/links.py): its nonce is refused from then
    on, so a link works once however often it is clicked, forwarded or replayed."""

    nonce = models.CharField(max_length=40, primary_key=True)
    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    decision = models.CharField(max_length=12)
    used_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"used mail link {self.nonce} ({self.decision} of escalation {self.escalation_id})"


@dataclass(frozen=True)
class ChatConfig:
    """What the chat channel uses right now: the environment's value wins over the admin's row."""

    webhook_url: str
    signing_secret: str
    language: str

    @property
    def posting(self) -> bool:
        return bool(self.webhook_url)

    @property
    def receiving(self) -> bool:
        return bool(self.signing_secret)


class ChatSettings(models.Model):
    """The one row of the Slack-compatible chat channel (README "Approvals in chat"), edited in the admin so an
    operator pastes what the Slack app shows without a redeploy; SLACK_WEBHOOK_URL / SLACK_SIGNING_SECRET in
    the environment win (a secret store). Chat is off while neither a webhook URL nor a secret is set."""

    webhook_url = models.URLField(
        _("incoming webhook URL"),
        max_length=500,
        blank=True,
        help_text=_(
            "The Slack app's incoming webhook (https://hooks.slack.com/services/…): one message per new "
            "escalation and per reminder is posted there. Blank = no messages."
        ),
    )
    signing_secret = models.CharField(
        _("signing secret"),
        max_length=200,
        blank=True,
        help_text=_(
            "The Slack app's signing secret (Basic Information › App Credentials): button presses are accepted "
            "only when signed with it. Blank = buttons are refused."
        ),
    )
    language = models.CharField(
        _("language of chat messages"),
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text=_("Blank = the deployment's default language."),
    )

    class Meta:
        verbose_name = verbose_name_plural = _("chat settings")

    def __str__(self) -> str:
        return gettext("chat settings")

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    def clean(self) -> None:
        refusal = netguard.refusal_at_save(self.webhook_url) if self.webhook_url else None
        if refusal:
            raise ValidationError({"webhook_url": refusal})

    @classmethod
    def current(cls) -> ChatConfig:
        row = cls.objects.filter(pk=1).first() or cls()
        return ChatConfig(
            webhook_url=settings.SLACK_WEBHOOK_URL or row.webhook_url,
            signing_secret=settings.SLACK_SIGNING_SECRET or row.signing_secret,
            language=row.language or settings.LANGUAGE_CODE,
        )


class SavedFilter(models.Model):
    """A queue view a reviewer named: the query string of /review/ (filters and sort), listed as a link."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_filters")
    name = models.CharField(_("name"), max_length=80)
    query = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="saved_filter_name_once")]

    def __str__(self) -> str:
        return f"saved filter {self.name!r} of {self.user}"


class AuditEvent(models.Model):
    """Append-only: every event of every escalation, with who and when."""

    escalation = models.ForeignKey(
        Escalation, on_delete=models.CASCADE, related_name="events", verbose_name=_("escalation")
    )
    event = models.CharField(_("event"), max_length=30)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("actor")
    )
    data = models.JSONField(_("data"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")

    def __str__(self) -> str:
        return gettext("%(event)s on escalation %(escalation)s") % {
            "event": self.event,
            "escalation": self.escalation_id,
        }


APPROVED_AT_ONCE = "approved at once: no escalation rule fired"


class ActionRequestQuerySet(models.QuerySet):
    def with_decision(self) -> ActionRequestQuerySet:
        """The requests with what ``ActionRequest.decision_made`` reads (the escalation and who decided it),
        fetched in the same query."""
        return self.select_related("escalation", "escalation__decided_by")


class ActionRequest(models.Model):
    """A permission request an agent made over the REST API (POST /api/v1/actions): what it asked, the
    policy's verdict at once and, when a human has to decide, the escalation carrying the decision.
    Requests approved at once are kept too: the audit trail of what agents were allowed to do."""

    class Status(models.TextChoices):
        APPROVED = "approved", _("Approved")
        PENDING = "pending", _("Pending")
        REJECTED = "rejected", _("Rejected")

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="action_requests")
    session_id = models.CharField(max_length=200, blank=True)
    operation = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    value = models.FloatField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    retry_count = models.PositiveIntegerField(default=0)
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, help_text=_("The verdict when it was asked"))
    reason = models.CharField(max_length=40, blank=True)
    priority = models.CharField(max_length=10, blank=True)
    rule = models.CharField(max_length=200, blank=True)
    escalation = models.OneToOneField(
        Escalation, null=True, blank=True, on_delete=models.SET_NULL, related_name="action_request"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ActionRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["agent", "created_at"], name="action_agent_time")]

    def __str__(self) -> str:
        return f"action request {self.pk} ({self.operation}, {self.status})"

    def comment_at_once(self) -> str:
        """Why a request was answered without a reviewer: no rule fired, or a policy row's auto decision
        (its rule names the row)."""
        if self.reason in (AUTO_APPROVED, AUTO_REJECTED):
            return f"{self.status} at once by the policy: {self.rule}"
        return APPROVED_AT_ONCE if self.status == self.Status.APPROVED else ""

    def decision_made(self) -> dict | None:
        """The decision on this request, as its waiters read it (the REST API, the gateway's hold): a dict
        with ``decision`` (approved / modified / taken_over / rejected / expired), ``comment`` and
        ``decided_at``, and — when a reviewer made it — ``arguments``, ``result``, ``reviewer`` and
        ``reviewer_confidence``; None while a reviewer has yet to decide. Read it from a row fetched
        ``with_decision()`` so that it costs no query."""
        escalation: Escalation | None = self.escalation
        if escalation is None:
            if self.status == self.Status.PENDING:  # its escalation was deleted by an admin
                return {"decision": "expired", "comment": "the escalation was withdrawn", "decided_at": None}
            return {
                "decision": self.status,
                "arguments": self.arguments if self.status == self.Status.APPROVED else None,
                "comment": self.comment_at_once(),
                "decided_at": self.created_at,
            }
        if escalation.state == Escalation.State.EXPIRED:
            return {"decision": "expired", "comment": escalation.comment, "decided_at": escalation.decided_at}
        if escalation.state != Escalation.State.DECIDED:
            return None
        decision = escalation.decision
        arguments = {
            Escalation.Decision.APPROVED: escalation.arguments,
            Escalation.Decision.MODIFIED: escalation.final_arguments,
        }.get(decision)
        return {
            "decision": decision,
            "arguments": arguments,
            "result": escalation.result if decision == Escalation.Decision.TAKEN_OVER else None,
            "comment": escalation.comment,
            "reviewer": escalation.decided_by.get_username() if escalation.decided_by_id else None,
            "reviewer_confidence": escalation.reviewer_confidence,
            "decided_at": escalation.decided_at,
        }


class Suggestion(models.TextChoices):
    """The two suggestions decision history can make for an agent + operation (review.suggestions)."""

    APPROVE = "approve", _("auto-approve")
    REJECT = "reject", _("auto-reject")


class PolicyChange(models.Model):
    """Append-only: a policy row changed from a suggestion (applied), or put back (undone) — who, when, the
    row's fields before and after (null: there was / is no row), and the evidence the suggestion showed."""

    class Kind(models.TextChoices):
        APPLIED = "applied", _("applied")
        UNDONE = "undone", _("undone")

    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    suggestion = models.CharField(_("suggestion"), max_length=10, choices=Suggestion.choices)
    # The row's scope is kept apart from the row itself: undoing a created row deletes it.
    policy = models.ForeignKey(
        EscalationPolicy,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("policy"),
    )
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("agent"))
    agent_name = models.CharField(_("agent name"), max_length=100)
    operation = models.CharField(_("operation"), max_length=100)
    before = models.JSONField(_("before"), null=True, blank=True)
    after = models.JSONField(_("after"), null=True, blank=True)
    evidence = models.JSONField(_("evidence"), default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("actor"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    # An "undone" change points at the "applied" one it reversed (each applied change is undone at most once).
    undoes = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="undone_by",
        verbose_name=_("undoes"),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("policy change")
        verbose_name_plural = _("policy changes")

    def __str__(self) -> str:
        return gettext("%(kind)s %(suggestion)s for %(agent)s/%(operation)s") % {
            "kind": self.get_kind_display(),
            "suggestion": self.get_suggestion_display(),
            "agent": self.agent_name,
            "operation": self.operation,
        }


class SuggestionDismissal(models.Model):
    """A reviewer dismissed a suggestion: it stays hidden until REVIEW_SUGGEST_RECENT more decisions of its
    agent + operation were made (``decisions_seen``: how many there were when it was dismissed)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=100)
    suggestion = models.CharField(max_length=10, choices=Suggestion.choices)
    decisions_seen = models.PositiveIntegerField()
    dismissed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    dismissed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "operation", "suggestion"], name="suggestion_dismissed_once")
        ]

    def __str__(self) -> str:
        return f"dismissed {self.suggestion} for {self.agent_id}/{self.operation}"
