"""Durable agent runs: the `ctx` an agent function receives, journaling every guarded call as a step.

The DBOS / Temporal contract: agent code is deterministic apart from `ctx` calls. Every `ctx.llm`,
`ctx.tool`, `ctx.cache` and `ctx.phase` call takes the next sequence number; a step that already completed in this
run returns its recorded result (replay) instead of running again, so a run resumed after a human
decision or reclaimed after a crash executes from the top and only new work happens.

Pure Python: the Django side implements `StepJournal` (steps in PostgreSQL) and `ToolPolicy` (the
escalation policy), and hands in the guard pipeline's `GuardDeps`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from opentelemetry import trace

from agentops.observability import genai
from agentops.observability.metrics import TOOL_ERRORS
from agentops.runtime.cache import TwoLevelCache, cache_key
from agentops.runtime.errors import Classified, classify_any, describe
from agentops.runtime.guard import GuardDeps, GuardResult, guarded_llm
from agentops.runtime.interruptions import (  # raised here; callers import them from either module
    NondeterminismError,
    PhaseDeadline,
    PhaseTimeout,
    RequestTimeout,
    RunCancelled,
    RunInterrupted,
    Suspend,
    ToolRejected,
)
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable, HandoffOutcome, HumanPending
from agentops.runtime.providers.base import LLMRequest
from agentops.runtime.retry import RetryBudget, RetryTrace, call_classified
from agentops.runtime.timeouts import LAYERED_DEFAULTS, STEP_CRITICAL, STEP_DEFAULTS, Deadline, TimeoutExceeded

tracer = trace.get_tracer("agentops.runs")
log = structlog.get_logger("agentops.runs")

# Which phases end the run when they time out (critical) and which are skipped (optional): the seed's.
CRITICAL_PHASES = dict(STEP_CRITICAL)


# --- what the journal records -------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedStep:
    """A step as the journal has it. `status`: completed | skipped | failed | waiting_human | decided."""

    seq: int
    kind: str
    name: str
    status: str
    result: Any = None
    decision: Mapping[str, Any] | None = None  # for decided steps: decision, arguments, result, comment
    end_seq: int | None = None  # phases: the last seq inside the phase
    elapsed: float = 0.0  # a phase still open (its run was suspended): active seconds it already used


@dataclass
class StepMeta:
    """What the timeline shows about one step besides its result."""

    attempts: int = 1
    error_class: str | None = None
    hops: list[dict] = field(default_factory=list)
    cache_hit: bool = False
    duration_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    handler: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The escalation policy's answer for one tool call."""

    escalate: bool
    reason: str | None = None
    priority: str | None = None
    rule: str | None = None
    reject: bool = False  # the policy rejects the call at once (an auto-reject row): no human is asked


class StepJournal(Protocol):
    def replay(self, seq: int) -> RecordedStep | None:
        """The recorded step at `seq` in this run, or None if it never started or must run again."""

    def begin(
        self, seq: int, kind: str, name: str, phase: str | None, args: Mapping[str, Any], *, durable: bool = False
    ) -> None:
        """The step starts. ``durable`` (a side-effecting tool) and phases: recorded before the work, so a crash
        is visible; other steps may be recorded only when they end (one write per step)."""

    def complete(self, seq: int, result: Any, meta: StepMeta, *, end_seq: int | None = None) -> None: ...

    def skip(self, seq: int, reason: str, meta: StepMeta, *, end_seq: int | None = None) -> None: ...

    def fail(self, seq: int, error_class: str, message: str, meta: StepMeta) -> None: ...

    def pause(self, seq: int, meta: StepMeta) -> None:
        """A phase stays open while its run waits for a human: record the active time it used so far
        (``meta.duration_ms``), so that the resumed run counts only the rest against the phase's timeout."""

    def wait_human(
        self,
        seq: int,
        *,
        reason: str,
        priority: str,
        payload: Mapping[str, Any],
        meta: StepMeta,
        step: tuple[str, str, str | None, Mapping[str, Any]] | None = None,
    ) -> Any:
        """Create the escalation for this step and mark it waiting; returns the escalation id. `step`
        (kind, name, phase, arguments) creates the step row when no work began (a tool held for review)."""


class ToolPolicy(Protocol):
    def evaluate(
        self, tool: str, args: Mapping[str, Any], *, value: float | None, confidence: float | None, retry_count: int
    ) -> Verdict: ...


def _policy_rejected(result: Any) -> bool:
    """Whether a completed tool step is a call the policy rejected at once (see RunContext.tool)."""
    return isinstance(result, dict) and result.get("rejected") is True and result.get("by_policy") is True


# --- tools ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolSpec:
    """A tool an agent may call. `fn(args, idempotency_key=...)` returns a JSON-serialisable result."""

    name: str
    fn: Callable[..., Any]
    side_effect: bool = False
    cacheable: bool = False
    description: str = ""


TOOLS: dict[str, ToolSpec] = {}


def tool(name: str, *, side_effect: bool = False, cacheable: bool = False, description: str = ""):
    """Register a tool function. Side-effecting tools are never cached and receive an idempotency key."""
    if side_effect and cacheable:
        raise ValueError(f"tool {name!r}: a side-effecting tool cannot be cacheable")

    def register(fn):
        TOOLS[name] = ToolSpec(name, fn, side_effect, cacheable, description or (fn.__doc__ or "").strip())
        return fn

    return register


# --- agents ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentSpec:
    name: str
    fn: Callable[[RunContext, Any], Any]
    description: str = ""


AGENTS: dict[str, AgentSpec] = {}


def agent(name: str, *, description: str = ""):
    """Register an agent function `fn(ctx, input) -> output` under `name`."""

    def register(fn):
        AGENTS[name] = AgentSpec(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


# --- the context ---------------------------------------------------------------------------------
_tool_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentops-tool")


@dataclass
class RunSettings:
    request_timeout: float = LAYERED_DEFAULTS["request"]
    tool_timeout: float = LAYERED_DEFAULTS["tool"]
    phase_timeouts: Mapping[str, float] = field(default_factory=lambda: dict(STEP_DEFAULTS))
    critical_phases: Mapping[str, bool] = field(default_factory=lambda: dict(CRITICAL_PHASES))


class RunContext:
    """What an agent function receives. Not thread-safe: one run, one thread."""

    def __init__(
        self,
        run_id: Any,
        *,
        journal: StepJournal,
        deps: GuardDeps,
        policy: ToolPolicy,
        settings: RunSettings | None = None,
        active_seconds: float = 0.0,
        session_id: str = "",
        agent: str = "",
        cancelled: Callable[[], bool] = lambda: False,
        tool_cache: TwoLevelCache | None = None,
        caches: Mapping[str, TwoLevelCache] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.run_id = run_id
        self.journal = journal
        self.policy = policy
        self.settings = settings or RunSettings()
        self.session_id = session_id
        self.agent = agent
        self._cancelled = cancelled
        self._clock = clock
        self._tool_cache = tool_cache
        self._caches = dict(caches or {})
        self._seq = 0
        self._phase: str | None = None
        self._phase_seconds = 0.0
        self._phase_deadline: Deadline | None = None
        remaining = max(0.0, self.settings.request_timeout - active_seconds)
        self.request_deadline = Deadline.after(remaining, clock=clock)
        self._deps = deps
        self.tokens = {"input": 0, "output": 0}
        self._tool_errors: dict[str, dict] = {}  # tool → the classification of its last failure in this execution

    # -- helpers
    def _next_seq(self) -> int:
        if self._cancelled():
            raise RunCancelled(f"run {self.run_id} was cancelled")
        if self.request_deadline.expired:
            raise RequestTimeout(self.settings.request_timeout)
        if self._phase_expired():
            raise PhaseDeadline(self._phase or "", self._phase_seconds, "the agent's own code")
        self._seq += 1
        return self._seq

    def _phase_expired(self) -> bool:
        return self._phase_deadline is not None and self._phase_deadline.expired

    def _out_of_time(self, what: str) -> RunInterrupted | None:
        """The request's or the phase's timeout, when one of them ran out (the request's first)."""
        if self.request_deadline.expired:
            return RequestTimeout(self.settings.request_timeout)
        if self._phase_expired():
            return PhaseDeadline(self._phase or "", self._phase_seconds, what)
        return None

    def _replayed(self, seq: int, kind: str, name: str) -> RecordedStep | None:
        recorded = self.journal.replay(seq)
        if recorded is not None and (recorded.kind, recorded.name) != (kind, name):
            raise NondeterminismError(
                f"step {seq} was {recorded.kind} {recorded.name!r} and is now {kind} {name!r}: agent code must be "
                "deterministic apart from ctx calls"
            )
        return recorded

    def _deadline(self, layer_seconds: float) -> Deadline:
        """The tightest of: this layer's timeout, the current phase, the whole request."""
        candidates = [Deadline.after(layer_seconds, clock=self._clock), self.request_deadline]
        if self._phase_deadline is not None:
            candidates.append(self._phase_deadline)
        return min(candidates, key=lambda d: d.remaining())

    def idempotency_key(self, seq: int) -> str:
        return f"run:{self.run_id}:step:{seq}"

    # -- ctx.llm
    def llm(
        self,
        operation: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        **extra: Any,
    ) -> str:
        """A guarded LLM call (cache, budget, breakers, retries, fallbacks, validation). Returns the text."""
        return self.llm_result(
            operation, messages, model=model, max_tokens=max_tokens, temperature=temperature, **extra
        ).text

    def llm_result(
        self, operation: str, messages, *, model="", max_tokens=None, temperature=None, **extra
    ) -> GuardResult:
        seq = self._next_seq()
        recorded = self._replayed(seq, "llm", operation)
        if recorded is not None:
            if recorded.status == "completed":
                return GuardResult.from_dict(recorded.result, replayed=True)
            if recorded.status == "decided":  # a human took over the answer
                text = (recorded.decision or {}).get("result") or ""
                result = GuardResult(
                    text=str(text), model="human", provider="human", handler="human", operation=operation
                )
                self.journal.complete(seq, result.to_dict(), StepMeta(handler="human"))
                return result
            if recorded.status == "waiting_human":
                raise Suspend(seq, None, "all_fallbacks_failed")
        self.journal.begin(seq, "llm", operation, self._phase, {"messages": list(messages), "model": model})
        request = LLMRequest(
            messages=list(messages),
            model=model,
            operation=operation,
            max_tokens=max_tokens,
            temperature=temperature,
            extra=extra,
            metadata={"run": self.run_id, "step": seq, "session": self.session_id, "agent": self.agent},
        )
        deps = dataclasses.replace(self._deps, escalator=_StepHandoff(self, seq))
        started = self._clock()
        # The step's span is the guarded call's own (``agentops.llm {operation}``, with ``agentops.step``).
        # The call's deadline is the tightest of the request's, the phase's and the request timeout from
        # now; each attempt inside it gets min(that remaining time, the llm timeout).
        try:
            result = guarded_llm(request, deps=deps, deadline=self._deadline(self.settings.request_timeout))
        except HumanPending as pending:
            raise Suspend(seq, pending.escalation_id, pending.reason) from None
        except (PhaseDeadline, RequestTimeout) as exc:  # out of time: no human was asked (_StepHandoff)
            hops = [h.to_dict() if hasattr(h, "to_dict") else h for h in getattr(exc, "hops", [])]
            self._fail_step(seq, "Timeout", str(exc), started, hops=hops)
            raise
        except TimeoutExceeded as exc:
            self._fail_step(seq, "Timeout", str(exc), started)
            raise (self._out_of_time(f"llm call {operation!r}") or exc) from None
        except (BudgetExceeded, BudgetUnavailable) as exc:  # refused before any provider was asked
            self._fail_step(seq, exc, str(exc), started)
            raise
        except Exception as exc:
            hops = [h.to_dict() for h in getattr(exc, "hops", [])]
            out_of_time = self._out_of_time(f"llm call {operation!r}")
            if out_of_time is not None:  # every handler failed because the time ran out
                self._fail_step(seq, "Timeout", f"{out_of_time} (last: {exc})", started, hops=hops)
                raise out_of_time from None
            self._fail_step(seq, exc, str(exc), started, hops=hops)
            raise
        self.tokens["input"] += result.input_tokens
        self.tokens["output"] += result.output_tokens
        if self._phase_expired():  # answered, but after the phase's deadline: the tokens count, the answer not
            late = PhaseDeadline(self._phase or "", self._phase_seconds, f"llm call {operation!r}")
            meta = dataclasses.replace(_meta_of(result), error_class="Timeout")
            self.journal.fail(seq, "Timeout", f"{late} (the answer came too late)", meta)
            raise late
        self.journal.complete(seq, result.to_dict(), _meta_of(result))
        return result

    def _timeout(self, layer: str, started: float, what: str) -> BaseException:
        """The whole request's or the phase's timeout when that is what ran out, else this layer's."""
        return self._out_of_time(what) or TimeoutExceeded(layer, round(self._clock() - started, 3))

    def _fail_step(self, seq: int, error: Any, message: str, started: float, hops=None, attempts: int = 1) -> None:
        """Record a failed step under its error class (``error``: the exception, or a class name)."""
        found = classify_any(error) if isinstance(error, BaseException) else describe(str(error))
        name = found.error_class.value if found is not None else str(error)
        meta = StepMeta(
            error_class=name, duration_ms=(self._clock() - started) * 1000, hops=hops or [], attempts=attempts
        )
        self.journal.fail(seq, name, message[:2000], meta)
        log.warning(
            "run.step_failed",
            run_id=self.run_id,
            step=seq,
            error_class=name,
            error_category=found.category.value if found is not None else None,
            error_kind=found.kind if found is not None else None,
            reason=found.reason if found is not None else None,
            error=message[:500],
        )

    # -- ctx.tool
    def tool(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        value: float | None = None,
        confidence: float | None = None,
        side_effect: bool | None = None,
        retry_count: int = 0,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call a registered tool after the escalation policy allowed it (or a human approved it).
        `context` (agent_analysis, suggestions, ...) is shown to the reviewer if the call escalates."""
        args = dict(args or {})
        spec = TOOLS.get(name)
        if spec is None:
            raise KeyError(f"no tool named {name!r} is registered")
        side_effect = spec.side_effect if side_effect is None else side_effect
        seq = self._next_seq()
        recorded = self._replayed(seq, "tool", name)
        if recorded is not None:
            if recorded.status == "completed":
                decision = recorded.decision or {}
                if decision.get("decision") == "rejected":  # replays as the same exception
                    raise ToolRejected(name, str(decision.get("comment") or ""), expired=bool(decision.get("expired")))
                if _policy_rejected(recorded.result):
                    raise ToolRejected(name, str(recorded.result.get("comment") or ""), by_policy=True)
                return recorded.result
            if recorded.status == "waiting_human":
                raise Suspend(seq, None, "waiting")
            if recorded.status == "decided":
                return self._apply_decision(seq, spec, args, recorded.decision or {}, side_effect)
        verdict = self.policy.evaluate(name, args, value=value, confidence=confidence, retry_count=retry_count)
        if verdict.reject:  # journaled like a reviewer's rejection, so a replay raises the same exception
            self.journal.begin(seq, "tool", name, self._phase, {"args": args})
            comment = verdict.rule or ""
            self.journal.complete(
                seq, {"rejected": True, "by_policy": True, "comment": comment}, StepMeta(handler="policy")
            )
            raise ToolRejected(name, comment, by_policy=True)
        if verdict.escalate:
            escalation_id = self.journal.wait_human(
                seq,
                reason=verdict.reason or "policy",
                priority=verdict.priority or "medium",
                payload={
                    "tool": name,
                    "arguments": args,
                    "value": value,
                    "confidence": confidence,
                    "retry_count": retry_count,
                    "rule": verdict.rule,
                    "side_effect": side_effect,
                    "last_error": self._tool_errors.get(name),
                },
                meta=StepMeta(),
                step=("tool", name, self._phase, {"args": args}),
            )
            raise Suspend(seq, escalation_id, verdict.reason or "policy")
        return self._run_tool(seq, spec, args, side_effect)

    def _apply_decision(self, seq: int, spec: ToolSpec, args: dict, decision: Mapping[str, Any], side_effect: bool):
        kind = decision.get("decision")
        if kind in ("approved", "modified"):
            final_args = decision.get("arguments") if kind == "modified" else args
            return self._run_tool(seq, spec, dict(final_args or args), side_effect)
        if kind == "taken_over":
            result = decision.get("result")
            self.journal.complete(seq, result, StepMeta(handler="human"))
            return result
        comment = str(decision.get("comment") or "")
        self.journal.complete(seq, {"rejected": True, "comment": comment}, StepMeta(handler="human"))
        raise ToolRejected(spec.name, comment, expired=bool(decision.get("expired")))

    def _run_tool(self, seq: int, spec: ToolSpec, args: dict, side_effect: bool) -> Any:
        self.journal.begin(seq, "tool", spec.name, self._phase, {"args": args}, durable=side_effect)
        key = self.idempotency_key(seq) if side_effect else None
        cache_entry = None
        if spec.cacheable and not side_effect and self._tool_cache is not None:
            cache_entry = cache_key("tool", {"tool": spec.name, "args": args})
            hit = self._tool_cache.get(cache_entry)
            if hit is not None:
                self.journal.complete(seq, hit.value, StepMeta(cache_hit=True, attempts=0))
                return hit.value
        deadline = self._deadline(self.settings.tool_timeout)
        started = self._clock()
        with tracer.start_as_current_span(
            f"execute_tool {spec.name}",
            attributes=self._tool_attributes(seq, spec, args),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            retries, policies = RetryTrace(), self._deps.config.get().retry
            try:  # a failure is classified and retried by its class's policy (errors.classify_any)
                result = call_classified(
                    lambda: _tool_pool.submit(spec.fn, args, idempotency_key=key).result(
                        timeout=max(0.0, deadline.remaining())
                    ),
                    settings=policies,
                    budget=RetryBudget(policies.budget),
                    deadline=deadline,
                    sleep=self._deps.sleep,
                    trace=retries,
                    on_error=lambda exc, found, attempt: _count_tool_error(spec.name, found),
                    passthrough=(FutureTimeout,),
                )
            except FutureTimeout:
                # The thread cannot be killed; it finishes in the background and its result is dropped.
                error = self._timeout("tool", started, f"tool {spec.name!r}")
                genai.failed(span, "timeout", error)
                self._fail_step(seq, "Timeout", str(error), started, attempts=retries.attempts)
                raise error from None
            except Exception as exc:
                found = classify_any(exc)
                self._tool_errors[spec.name] = found.to_dict()
                genai.failed(span, found.error_class.value, exc)
                self._fail_step(seq, exc, str(exc), started, attempts=retries.attempts)
                raise
            if span.is_recording() and genai.capture_content():
                span.set_attribute("gen_ai.tool.call.result", json.dumps(result, default=str, ensure_ascii=False))
        if cache_entry is not None:
            self._tool_cache.set(cache_entry, result)
        meta = StepMeta(duration_ms=(self._clock() - started) * 1000, attempts=retries.attempts)
        if retries.errors:
            meta.error_class = retries.errors[-1].error_class.value
        self.journal.complete(seq, result, meta)
        return result

    def _tool_attributes(self, seq: int, spec: ToolSpec, args: Mapping[str, Any]) -> dict[str, Any]:
        """``execute_tool``'s attributes: the call id is the step's idempotency key (stable across replays)."""
        attributes: dict[str, Any] = {
            genai.OPERATION: "execute_tool",
            genai.TOOL_NAME: spec.name,
            genai.TOOL_CALL_ID: self.idempotency_key(seq),
            genai.TOOL_TYPE: "function",
            "agentops.step": seq,
            "agentops.tool.side_effect": spec.side_effect,
        }
        if spec.description:
            attributes[genai.TOOL_DESCRIPTION] = spec.description[:500]
        if genai.capture_content():
            attributes["gen_ai.tool.call.arguments"] = json.dumps(dict(args), default=str, ensure_ascii=False)
        return attributes

    # -- ctx.cache
    def cache(self, name: str, key: Any, loader: Callable[[], Any]) -> Any:
        """The value under ``key`` in the named cache (``user_profiles``, ``tool_results``), else
        ``loader()``'s, which is stored for the next run. A journaled step (kind ``cache``): a resumed run gets
        the value this run got, whatever the cache holds by then. The value must be JSON-serialisable; ctx
        calls made inside ``loader`` are steps of their own, replayed with it."""
        if name not in self._caches:
            known = ", ".join(sorted(self._caches)) or "none"
            raise KeyError(f"no cache named {name!r} (this run has: {known})")
        seq = self._next_seq()
        recorded = self._replayed(seq, "cache", name)
        if recorded is not None and recorded.status == "completed":
            self._seq = max(self._seq, recorded.end_seq or seq)  # the loader's own steps replay with it
            return recorded.result
        self.journal.begin(seq, "cache", name, self._phase, {"key": key})
        store, entry = self._caches[name], cache_key(name, {"key": key})
        hit = store.get(entry)
        if hit is not None:
            self.journal.complete(seq, hit.value, StepMeta(cache_hit=True, attempts=0), end_seq=seq)
            return hit.value
        started = self._clock()
        try:
            value = loader()
        except RunInterrupted:
            raise
        except Exception as exc:
            self._fail_step(seq, exc, str(exc), started)
            raise
        store.set(entry, value)  # raises TypeError for a value that is not JSON
        self.journal.complete(seq, value, StepMeta(duration_ms=(self._clock() - started) * 1000), end_seq=self._seq)
        return value

    # -- ctx.phase
    def phase(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        critical: bool | None = None,
        default: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Run `fn` as the phase `name` under its step timeout, which bounds every ctx call inside it (LLM
        calls too: each gets at most the phase's remaining time). A critical phase that times out fails the
        run; an optional one is recorded as skipped and `default` is returned. Time the run spent waiting for
        a human inside the phase does not count against it."""
        if self._phase is not None:
            raise RuntimeError("phases do not nest")
        critical = self.settings.critical_phases.get(name, True) if critical is None else critical
        seconds = timeout if timeout is not None else self.settings.phase_timeouts.get(name, self.settings.tool_timeout)
        seq = self._next_seq()
        recorded = self._replayed(seq, "phase", name)
        if recorded is not None and recorded.status == "skipped":
            self._seq = recorded.end_seq or seq  # the phase's inner steps are skipped with it
            return default
        if recorded is None:
            self.journal.begin(seq, "phase", name, name, {"timeout": seconds, "critical": critical})
        # A phase left open by a suspension resumes with what it had left; a completed one replays afresh.
        used = recorded.elapsed if recorded is not None and recorded.status == "running" else 0.0
        self._phase, self._phase_seconds = name, seconds
        self._phase_deadline = Deadline.after(max(0.0, seconds - used), clock=self._clock)
        started = self._clock()

        def meta(error_class: str | None = None) -> StepMeta:
            return StepMeta(error_class=error_class, duration_ms=(used + self._clock() - started) * 1000)

        timed_out = False
        try:
            result = fn()
            timed_out = self._phase_expired()  # it finished, but too late (the seed's wait_for drops it)
        except PhaseDeadline:
            timed_out = True
        except TimeoutExceeded:  # an inner layer's own timeout (a tool's) ended the phase's work
            timed_out = True
        except Suspend:  # waits for a human: the phase stays open and resumes with the run
            self.journal.pause(seq, meta())
            raise
        except RunInterrupted:  # cancelled, request timeout, lease lost: the phase stays open
            raise
        except Exception as exc:  # the phase failed with its step; the agent may still handle the error
            error_name = classify_any(exc).error_class.value
            self.journal.fail(seq, error_name, str(exc)[:2000], meta(error_name))
            raise
        finally:
            self._phase, self._phase_deadline = None, None
        if timed_out:
            if critical:
                why = f"critical phase {name} timed out after {seconds:g} s: the run fails"
                self.journal.fail(seq, "Timeout", why, meta("Timeout"))
                raise PhaseTimeout(name, seconds) from None
            why = f"optional phase {name} timed out after {seconds:g} s: skipped, the run goes on without it"
            self.journal.skip(seq, why, meta("Timeout"), end_seq=self._seq)
            return default
        if recorded is None or recorded.status != "completed":
            self.journal.complete(seq, None, meta(), end_seq=self._seq)
        return result


class _StepHandoff:
    """The guard's human handoff for one llm step: the journal creates the escalation, the run suspends."""

    def __init__(self, ctx: RunContext, seq: int):
        self.ctx, self.seq = ctx, seq

    def handoff(self, request: LLMRequest, hops: Sequence[Any], reason: str) -> HandoffOutcome:
        out_of_time = self.ctx._out_of_time(f"llm call {request.operation!r}")
        if out_of_time is not None:  # the handlers failed because the phase or the request ran out of time:
            out_of_time.hops = list(hops)  # that is a timeout (fail or skip the phase), not a question for a human
            raise out_of_time
        escalation_id = self.ctx.journal.wait_human(
            self.seq,
            reason=reason,
            priority="high",
            payload={
                "operation": request.operation,
                "messages": list(request.messages),
                "hops": [h.to_dict() if hasattr(h, "to_dict") else h for h in hops],
            },
            meta=StepMeta(hops=[h.to_dict() if hasattr(h, "to_dict") else h for h in hops]),
        )
        raise HumanPending(escalation_id, reason)


def _count_tool_error(tool: str, found: Classified) -> None:
    TOOL_ERRORS.labels(tool, found.error_class.value, found.category.value).inc()


def _meta_of(result: GuardResult) -> StepMeta:
    return StepMeta(
        attempts=result.attempts,
        error_class=result.error_class,
        hops=[h.to_dict() for h in result.hops],
        cache_hit=result.cache_hit,
        duration_ms=result.duration_ms,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        model=result.model,
        handler=result.handler,
    )
