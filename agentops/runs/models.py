"""Agents, their runs and the step journal. The tables keep the ``agentops`` app label."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Agent(models.Model):
    """A registered agent function (agentops/runs/registry.py: the demo's agents and AGENTOPS_AGENT_MODULES) or an
    external agent that calls the REST API."""

    name = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)

    class ToolReview(models.TextChoices):
        HOLD = "hold", _("Hold the answer until a reviewer decides")
        ANNOTATE = "annotate", _("Answer at once; the escalation is raised beside it")
        OFF = "off", _("No review of tool calls")

    team = models.SlugField(max_length=80, blank=True, help_text=_("For team budgets"))
    enabled = models.BooleanField(default=True)
    gateway_tool_review = models.CharField(
        max_length=10,
        choices=ToolReview.choices,
        default=ToolReview.HOLD,
        help_text=_("Gateway answers whose tool calls the escalation policy finds sensitive."),
    )

    class GatewayHuman(models.TextChoices):
        HOLD = "hold", _("Hold the answer for a reviewer (approve, write the answer, or reject)")
        FAIL = "fail", _("Answer the provider's error at once (429 quota, 503 unavailable)")

    gateway_human = models.CharField(
        _("human in the gateway"),
        max_length=10,
        choices=GatewayHuman.choices,
        default=GatewayHuman.FAIL,
        help_text=_(
            "Gateway calls that a budget set to escalate blocks, or that every fallback failed: hold them for "
            "a reviewer as runs do, or fail them at once."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("agent")
        verbose_name_plural = _("agents")

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        WAITING_HUMAN = "waiting_human", _("Waiting Human")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=60, blank=True)
    session_id = models.CharField(max_length=200, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    trace_id = models.CharField(max_length=32, blank=True)
    # W3C trace context ({"traceparent", "tracestate"}) every execution's invoke_agent span continues: the
    # caller's (a traceparent on POST /api/v1/runs) until the first execution starts, then that execution's.
    trace_context = models.JSONField(default=dict, blank=True)
    # lease: the worker executing the run renews it with heartbeats; beat reclaims expired ones
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    executions = models.PositiveIntegerField(default=0, help_text=_("How many times a worker started this run"))
    active_seconds = models.FloatField(default=0.0, help_text=_("Execution time so far, human waits excluded"))
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"], condition=~models.Q(idempotency_key=""), name="run_idempotency"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.agent_id}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class Step(models.Model):
    """The journal: one row per ctx call of a run, in order."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        COMPLETED = "completed", _("Completed")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")
        WAITING_HUMAN = "waiting_human", _("Waiting Human")
        DECIDED = "decided", _("Decided")

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=10)  # llm | tool | phase
    name = models.CharField(max_length=100)
    phase = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    decision = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    executions = models.PositiveIntegerField(default=0, help_text=_("Times the work of this step started"))
    error_class = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    hops = models.JSONField(default=list, blank=True)
    cache_hit = models.BooleanField(default=False)
    handler = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    duration_ms = models.FloatField(default=0.0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    idempotency_key = models.CharField(max_length=100, blank=True)
    escalation_id = models.BigIntegerField(null=True, blank=True)
    end_seq = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.seq} {self.kind} {self.name} ({self.status})"


class ToolEffect(models.Model):
    """Exactly-once record of a side effect, keyed by the step's idempotency key (run:<id>:step:<seq>).

    A side-effecting tool that is re-executed after a crash finds its key and does not act twice."""

    idempotency_key = models.CharField(max_length=100, unique=True)
    tool = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.tool} {self.idempotency_key}"
