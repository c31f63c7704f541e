"""What the runs pages show, as plain display values (the templates hold no logic).

Everything an agent or an LLM produced (input, output, arguments, results, errors) is untrusted: the
templates only ever auto-escape it and render it inside `hx-disable` containers, so neither the browser
nor htmx acts on it. The review queue's escalation rows come through the runs' ports (agentops/runs/ports.py),
so this module never imports the review app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import display
from agentops.runs import ports
from agentops.runs.models import Run, Step
from agentops.runtime.errors import ErrorCategory, describe

JSON_DISPLAY_LIMIT = 20_000  # characters of pretty JSON shown per value; the rest is cut with a note
PREVIEW_CHARS = 90

RUN_BADGES = {
    Run.Status.QUEUED: "",
    Run.Status.RUNNING: "info",
    Run.Status.WAITING_HUMAN: "warn",
    Run.Status.SUCCEEDED: "ok",
    Run.Status.FAILED: "bad",
    Run.Status.CANCELLED: "muted",
}
STEP_BADGES = {
    Step.Status.RUNNING: "info",
    Step.Status.COMPLETED: "ok",
    Step.Status.FAILED: "bad",
    Step.Status.SKIPPED: "muted",
    Step.Status.WAITING_HUMAN: "warn",
    Step.Status.DECIDED: "ok",
}
HOP_BADGES = {
    "ok": "ok",
    "answered": "ok",
    "failed": "bad",
    "rejected": "bad",
    "no_rule": "muted",
    "pending": "warn",
    "near_miss": "muted",  # the semantic cache's: a close question, under the threshold
}
CANCELLABLE = (Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.WAITING_HUMAN)


def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre>, cut at JSON_DISPLAY_LIMIT characters (the template escapes it)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > JSON_DISPLAY_LIMIT:
        rest = _("%(n)s more characters not shown") % {"n": display.number(len(text) - JSON_DISPLAY_LIMIT)}
        return f"{text[:JSON_DISPLAY_LIMIT]}\n… ({rest})"
    return text


def preview(value: Any) -> str:
    """One line summarising a value, for the <summary> of its collapsed <details>."""
    if value is None or value in ({}, [], ""):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def run_duration(run: Run, now=None) -> tuple[str, bool]:
    """Wall-clock time from start to finish (to now while unfinished), and whether it is still going."""
    if run.started_at is None:
        return display.DASH, False
    ongoing = run.finished_at is None
    end = run.finished_at or now or timezone.now()
    return display.duration(max((end - run.started_at).total_seconds(), 0.0)), ongoing and not run.is_terminal


def review_url(escalation_id) -> str:
    """The approval screen for an escalation, once the review app is installed."""
    if escalation_id is None:
        return ""
    try:
        return reverse("review:detail", args=[escalation_id])
    except NoReverseMatch:
        return ""


@dataclass
class RunRow:
    run: Run
    badge: str
    steps: int
    duration: str
    ongoing: bool


@dataclass
class HopView:
    handler: str
    outcome: str
    badge: str
    target: str
    error_class: str
    reason: str
    attempts: Any
    waits: str
    duration: str
    status: Any


@dataclass
class EscalationView:
    reason: str
    priority: str
    subject: str  # the tool or operation the human decides on
    kind: str  # "tool" | "llm" | ""
    value: Any
    confidence: Any
    rule: str
    side_effect: Any
    details_json: str  # proposed tool arguments, or the messages of an llm call nobody could answer
    review_url: str
    reason_label: str = ""  # the reason, priority and state in the reader's language
    priority_label: str = ""
    state_label: str = ""
    # from the review queue's escalation row, when there is one
    state: str = ""
    queue: str = ""
    claimed_by: str = ""
    deadline_at: Any = None
    decision: str = ""
    decision_badge: str = ""
    decided_by: str = ""
    comment: str = ""
    reviewer_confidence: Any = None
    outcome_json: str = ""  # the reviewer's final arguments or written result
    withheld: bool = False  # an expert-queue item shown to a non-expert: what it is, none of its content


# The error taxonomy in words (agentops/runtime/errors.py): what each category means to someone reading a
# timeline or deciding an escalation.
CATEGORY_WORDS = {
    ErrorCategory.NETWORK: gettext_lazy("the network: a connection failed or a call timed out"),
    ErrorCategory.RESOURCE: gettext_lazy(
        "a resource ran out: memory, disk space, file handles, a provider's rate limit or a budget"
    ),
    ErrorCategory.DEPENDENCY: gettext_lazy("a service it depends on was down or its circuit breaker open"),
    ErrorCategory.INPUT: gettext_lazy("the request itself was refused (invalid, or not authorised)"),
    ErrorCategory.LOGIC: gettext_lazy(
        "the work itself failed: an answer was rejected, or the tool raised its own error"
    ),
    ErrorCategory.DATA: gettext_lazy("a response was malformed or incomplete"),
}
CATEGORY_LABELS = {
    ErrorCategory.NETWORK: gettext_lazy("network"),
    ErrorCategory.RESOURCE: gettext_lazy("resource"),
    ErrorCategory.DEPENDENCY: gettext_lazy("dependency"),
    ErrorCategory.INPUT: gettext_lazy("input"),
    ErrorCategory.LOGIC: gettext_lazy("logic"),
    ErrorCategory.DATA: gettext_lazy("data"),
}
KIND_WORDS = {
    "system": gettext_lazy("system failure"),
    "business": gettext_lazy("business failure"),
}


@dataclass(frozen=True)
class ErrorView:
    """An error class as the pages show it: the class, its category, system or business, and in words."""

    error_class: str
    category: str = ""  # network | resource | dependency | input | logic | data ("" when not on the taxonomy)
    kind: str = ""  # system | business
    kind_label: str = ""  # "system failure"
    category_label: str = ""  # the category in the reader's language
    sentence: str = ""  # "ResourceExhausted — a system failure (resource): a resource ran out: …"
    transient: bool = False
    reason: str = ""


def error_view(error_class: str | None, reason: str | None = None) -> ErrorView | None:
    """The display of a recorded error class (a step's, a run's, an escalation's); None without one. A name
    the taxonomy does not know (rows older than it) is shown as it is."""
    if not error_class:
        return None
    found = describe(error_class)
    if found is None:
        return ErrorView(error_class=str(error_class), reason=reason or "")
    kind_label = str(KIND_WORDS[found.kind])
    sentence = _("%(error_class)s — a %(kind)s (%(category)s): %(meaning)s") % {
        "error_class": error_class,
        "kind": kind_label,
        "category": CATEGORY_LABELS[found.category],
        "meaning": CATEGORY_WORDS[found.category],
    }
    return ErrorView(
        error_class=str(error_class),
        category=found.category.value,
        kind=found.kind,
        kind_label=kind_label,
        category_label=str(CATEGORY_LABELS[found.category]),
        sentence=sentence,
        transient=found.transient,
        reason=reason or found.reason or "",
    )


@dataclass
class StepView:
    step: Step
    badge: str
    hops: list[HopView]
    escalation: EscalationView | None
    duration: str
    duration_ms: float
    arguments_json: str
    arguments_preview: str
    result_json: str
    result_preview: str
    decision_json: str
    note: str  # why a phase failed or was skipped, in words (its timeout), or ""
    # a key that changes whenever what the step shows may change: unchanged steps keep their
    # <details> open/closed across live refreshes (hx-preserve)
    state_key: str
    error: ErrorView | None = None  # the step's error class on the taxonomy (a failed step, or a retried one)

    @property
    def semantic(self) -> HopView | None:
        """The semantic cache's hop (outcome ``ok``: answered by meaning; ``near_miss``: a close question was
        cached, under the route's threshold), which the guard puts first; else None."""
        first = self.hops[0] if self.hops else None
        return first if first is not None and first.handler == "semantic_cache" else None


def hop_view(hop: Any) -> HopView:
    data = hop if isinstance(hop, dict) else {"handler": str(hop)}
    waits = data.get("waits") or []
    if not isinstance(waits, list | tuple):
        waits = [waits]
    duration_ms = data.get("duration_ms")
    return HopView(
        handler=str(data.get("handler") or "?"),
        outcome=str(data.get("outcome") or ""),
        badge=HOP_BADGES.get(data.get("outcome"), "warn"),
        target=str(data.get("target") or ""),
        error_class=str(data.get("error_class") or ""),
        reason=str(data.get("reason") or ""),
        attempts=data.get("attempts", ""),
        waits=", ".join(display.duration(w) if isinstance(w, int | float) else str(w) for w in waits),
        duration=display.duration(duration_ms / 1000) if isinstance(duration_ms, int | float) else "",
        status=data.get("status") or "",
    )


def escalation_view(step: Step, escalation=None) -> EscalationView | None:
    """What the human must decide for a waiting step (or decided, for a decided one): from the review
    queue's Escalation row when there is one, else from the request recorded on the step itself."""
    inline = (step.arguments if isinstance(step.arguments, dict) else {}).get("escalation")
    inline = inline if isinstance(inline, dict) else {}
    if escalation is None and not inline:
        return None
    url = review_url(step.escalation_id) if step.status == Step.Status.WAITING_HUMAN else ""
    if escalation is not None:
        messages_ = (escalation.context or {}).get("messages") if escalation.kind == "llm" else None
        return EscalationView(
            reason=escalation.reason,
            priority=escalation.priority,
            subject=escalation.operation,
            kind=escalation.kind,
            value=escalation.value,
            confidence=escalation.confidence,
            rule=escalation.rule,
            side_effect=inline.get("side_effect"),
            details_json=pretty_json(messages_ if escalation.kind == "llm" else escalation.arguments or None),
            review_url=url,
            reason_label=escalation.get_reason_display(),
            priority_label=escalation.get_priority_display(),
            state_label=escalation.get_state_display(),
            state=escalation.state,
            queue=escalation.queue,
            claimed_by=escalation.claimed_by.get_username() if escalation.claimed_by_id else "",
            deadline_at=escalation.deadline_at if escalation.is_open else None,
            decision=escalation.get_decision_display() if escalation.decision else "",
            decision_badge="bad" if escalation.decision == "rejected" else "ok",
            decided_by=escalation.decided_by.get_username() if escalation.decided_by_id else "",
            comment=escalation.comment,
            reviewer_confidence=escalation.reviewer_confidence,
            outcome_json=pretty_json(
                escalation.result if escalation.result is not None else escalation.final_arguments
            ),
        )
    if inline.get("tool"):
        kind, subject, details = "tool", str(inline["tool"]), inline.get("arguments")
    elif inline.get("operation"):
        kind, subject, details = "llm", str(inline["operation"]), inline.get("messages")
    else:
        kind, subject, details = step.kind if step.kind in ("tool", "llm") else "", step.name, None
    return EscalationView(
        reason=str(inline.get("reason") or ""),
        priority=str(inline.get("priority") or ""),
        subject=subject,
        kind=kind,
        value=inline.get("value"),
        confidence=inline.get("confidence"),
        rule=str(inline.get("rule") or ""),
        side_effect=inline.get("side_effect"),
        details_json=pretty_json(details),
        review_url=url,
        reason_label=str(inline.get("reason") or ""),
        priority_label=str(inline.get("priority") or ""),
    )


def escalations_for(steps) -> dict:
    """The review queue's escalation rows of these steps, by id (one query)."""
    ids = [step.escalation_id for step in steps if step.escalation_id is not None]
    if not ids:
        return {}
    rows = ports.current().escalations.by_id(ids)
    # before the review queue existed a step's escalation id was its own pk: only trust a row that
    # points back at this very step
    by_step = {(step.run_id, step.seq): step.escalation_id for step in steps}
    return {pk: row for pk, row in rows.items() if by_step.get((row.run_id, row.step_seq)) == pk}


def withheld_escalation_view(escalation) -> EscalationView:
    """An expert-queue escalation as a non-expert sees it on a timeline: what kind of decision it is and
    where it stands, never its arguments, context, messages, decision, comment or outcome."""
    return EscalationView(
        reason=escalation.reason,
        priority=escalation.priority,
        subject=escalation.operation,
        kind=escalation.kind,
        value=None,
        confidence=None,
        rule="",
        side_effect=None,
        details_json="",
        review_url="",
        reason_label=escalation.get_reason_display(),
        priority_label=escalation.get_priority_display(),
        state_label=escalation.get_state_display(),
        state=escalation.state,
        queue=escalation.queue,
        withheld=True,
    )


def step_view(step: Step, escalations: dict | None = None, *, withheld: bool = False) -> StepView:
    """One step of a timeline. `withheld`: its escalation is in the expert queue and the viewer is no expert,
    so the step's arguments, result and decision (the same content) are left out as well."""
    if withheld:
        return StepView(
            step=step,
            badge=STEP_BADGES.get(step.status, ""),
            hops=[hop_view(hop) for hop in (step.hops if isinstance(step.hops, list) else [])],
            escalation=withheld_escalation_view(escalations[step.escalation_id]),
            duration=display.duration(step.duration_ms / 1000) if step.duration_ms else display.DASH,
            duration_ms=step.duration_ms,
            arguments_json="",
            arguments_preview="",
            result_json="",
            result_preview="",
            decision_json="",
            note=phase_note(step),
            state_key=f"{step.executions}-{step.status}-{step.attempts}-withheld",
            error=error_view(step.error_class),
        )
    arguments = step.arguments
    escalation = None
    if step.status in (Step.Status.WAITING_HUMAN, Step.Status.DECIDED):
        escalation = escalation_view(step, (escalations or {}).get(step.escalation_id))
    if isinstance(arguments, dict) and "escalation" in arguments:
        # the escalation block shows what the human decides on; a held tool call's own arguments are
        # the same values, so they are not repeated below it
        arguments = {k: v for k, v in arguments.items() if k != "escalation"}
        if escalation is not None and escalation.kind == "tool":
            arguments = None
    return StepView(
        step=step,
        badge=STEP_BADGES.get(step.status, ""),
        hops=[hop_view(hop) for hop in (step.hops if isinstance(step.hops, list) else [])],
        escalation=escalation,
        duration=display.duration(step.duration_ms / 1000) if step.duration_ms else display.DASH,
        duration_ms=step.duration_ms,
        arguments_json=pretty_json(arguments or None),
        arguments_preview=preview(arguments),
        result_json=pretty_json(step.result),
        result_preview=preview(step.result),
        decision_json=pretty_json(step.decision),
        note=phase_note(step),
        state_key=f"{step.executions}-{step.status}-{step.attempts}",
        error=error_view(step.error_class),
    )


def _phase_seconds(step: Step) -> str:
    seconds = (step.arguments if isinstance(step.arguments, dict) else {}).get("timeout")
    return (
        _("%(s)s s") % {"s": f"{seconds:g}"} if isinstance(seconds, int | float) else "?"
    )  # as configured, not as measured


def phase_note(step: Step) -> str:
    """A phase that timed out, in words: a critical one failed the run, an optional one was skipped."""
    if step.kind != "phase" or step.error_class != "Timeout":
        return ""
    values = {"phase": step.name, "seconds": _phase_seconds(step)}
    if step.status == Step.Status.SKIPPED:
        return (
            _(
                "Skipped: the optional phase “%(phase)s” did not finish within its %(seconds)s timeout, so the agent "
                "went on without its result (None)."
            )
            % values
        )
    if step.status == Step.Status.FAILED:
        return (
            _("The critical phase “%(phase)s” did not finish within its %(seconds)s timeout, so the run failed.")
            % values
        )
    return ""


def failure_reason(run: Run, steps: list[StepView]) -> str:
    """Why a failed run failed, in words, when the error alone does not say it plainly (a phase timeout)."""
    if run.status != Run.Status.FAILED or run.error_class != "PhaseTimeout":
        return ""
    failed = [view.step for view in steps if view.step.kind == "phase" and view.step.status == Step.Status.FAILED]
    values = {"phase": failed[-1].name if failed else "?", "seconds": _phase_seconds(failed[-1]) if failed else "?"}
    return (
        _(
            "The critical phase “%(phase)s” did not finish within its %(seconds)s timeout, so the run failed. Every "
            "call inside a phase counts against its timeout; the timeouts, and which phases are critical (a timeout "
            "fails the run) or optional (a timeout skips the phase), are set in the runtime settings."
        )
        % values
    )


def timeline_steps(run: Run, user) -> list[StepView]:
    """The run's steps as `user` may see them: a step whose escalation is in the expert queue keeps only
    what kind of decision it is for a non-expert (the review queue's visibility rule decides)."""
    rows = list(run.steps.order_by("seq"))
    escalations = escalations_for(rows)
    withheld: set[int] = set()
    if escalations:
        withheld = set(escalations) - ports.current().escalations.visible_ids(user, list(escalations))
    return [step_view(step, escalations, withheld=step.escalation_id in withheld) for step in rows]


def run_rows(runs: list[Run], step_counts: dict[int, int], now=None) -> list[RunRow]:
    """The rows of the runs list: badge, number of steps and duration of each run."""
    now = now or timezone.now()
    rows = []
    for run in runs:
        run_time, ongoing = run_duration(run, now)
        rows.append(RunRow(run, RUN_BADGES.get(run.status, ""), step_counts.get(run.pk, 0), run_time, ongoing))
    return rows
