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
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace

from agentops.runtime.cache import TwoLevelCache, cache_key
from agentops.runtime.errors import ProviderError, classify
from agentops.runtime.guard import GuardDeps, GuardResult, guarded_llm
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable, HandoffOutcome, HumanPending
from agentops.runtime.providers.base import LLMRequest
from agentops.runtime.timeouts import LAYERED_DEFAULTS, STEP_DEFAULTS, Deadline, TimeoutExceeded

tracer = trace.get_tracer("agentops.runs")

# Which phases end the run when they time out (critical) and which are skipped (optional).
CRITICAL_PHASES = {"planning": True, "tool_search": False, "tool_execution": True, "response_generation": True}


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


class StepJournal(Protocol):
    def replay(self, seq: int) -> RecordedStep | None:
        """The recorded step at `seq` in this run, or None if it never started or must run again."""

    def begin(self, seq: int, kind: str, name: str, phase: str | None, args: Mapping[str, Any]) -> None:
        """Record that the step started (committed before the work, so a crash is visible)."""

    def complete(self, seq: int, result: Any, meta: StepMeta, *, end_seq: int | None = None) -> None: ...

    def skip(self, seq: int, reason: str, meta: StepMeta, *, end_seq: int | None = None) -> None: ...

    def fail(self, seq: int, error_class: str, message: str, meta: StepMeta) -> None: ...

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


# --- control flow exceptions ----------------------------------------------------------------------
class RunInterrupted(BaseException):
    """Base of the exceptions that stop an execution without being the agent's own error.

    A BaseException, like KeyboardInterrupt: agent code that catches `Exception` to handle its own
    errors must not swallow a suspension, a cancellation or a timeout by accident."""


class Suspend(RunInterrupted):
    """The run waits for a human: the worker is released; a decision resumes the run."""

    def __init__(self, seq: int, escalation_id: Any, reason: str):
        super().__init__(f"step {seq} waits for a human ({reason})")
        self.seq, self.escalation_id, self.reason = seq, escalation_id, reason


class RunCancelled(RunInterrupted):
    pass


class LeaseLost(RunInterrupted):
    """Another worker owns this run now (our lease expired): stop quietly, write nothing more."""


class RequestTimeout(RunInterrupted):
    def __init__(self, seconds: float):
        super().__init__(f"the run exceeded its request timeout of {seconds:g} s (human waits excluded)")
        self.seconds = seconds


class PhaseTimeout(RunInterrupted):
    def __init__(self, phase: str, seconds: float):
        super().__init__(f"critical phase {phase!r} timed out after {seconds:g} s")
        self.phase, self.seconds = phase, seconds


class NondeterminismError(RunInterrupted):
    """Replay found a different call at a recorded position: the agent code is not deterministic."""


class ToolRejected(Exception):
    """A human rejected this tool call, or nobody decided in time (``expired``: the safe default, reject,
    applied). Agent code may catch it and carry on; the message never blames a reviewer for an expiry."""

    def __init__(self, tool: str, comment: str = "", *, expired: bool = False):
        if expired:
            why = f"tool {tool!r} was not run: no reviewer decided in time, so it counts as rejected (the safe default)"
        else:
            why = f"tool {tool!r} was rejected by a reviewer"
        super().__init__(why + (f": {comment}" if comment else ""))
        self.tool, self.comment, self.expired = tool, comment, expired


class HumanTookOver(Exception):
    """Internal: a human wrote the result of a step."""


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
        self._phase_deadline: Deadline | None = None
        remaining = max(0.0, self.settings.request_timeout - active_seconds)
        self.request_deadline = Deadline.after(remaining, clock=clock)
        self._deps = deps
        self.tokens = {"input": 0, "output": 0}

    # -- helpers
    def _next_seq(self) -> int:
        if self._cancelled():
            raise RunCancelled(f"run {self.run_id} was cancelled")
        if self.request_deadline.expired:
            raise RequestTimeout(self.settings.request_timeout)
        self._seq += 1
        return self._seq

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
        with tracer.start_as_current_span(
            "agent.step", attributes={"agent.step.seq": seq, "agent.step.kind": "llm", "agent.step.name": operation}
        ):
            try:
                result = guarded_llm(request, deps=deps, deadline=self._deadline(self.settings.request_timeout))
            except HumanPending as pending:
                raise Suspend(seq, pending.escalation_id, pending.reason) from None
            except TimeoutExceeded as exc:
                self._fail_step(seq, "Timeout", str(exc), started)
                if self.request_deadline.expired:
                    raise RequestTimeout(self.settings.request_timeout) from None
                raise
            except (BudgetExceeded, BudgetUnavailable) as exc:  # refused before any provider was asked
                self._fail_step(seq, type(exc).__name__, str(exc), started)
                raise
            except Exception as exc:
                error = classify(exc) if not isinstance(exc, ProviderError) else exc
                hops = [h.to_dict() for h in getattr(exc, "hops", [])]
                self._fail_step(seq, getattr(error, "error_class", type(exc).__name__), str(exc), started, hops=hops)
                raise
        self.tokens["input"] += result.input_tokens
        self.tokens["output"] += result.output_tokens
        self.journal.complete(seq, result.to_dict(), _meta_of(result))
        return result

    def _timeout(self, layer: str, started: float) -> BaseException:
        """The whole request's timeout when that is what ran out, else this layer's."""
        if self.request_deadline.expired:
            return RequestTimeout(self.settings.request_timeout)
        return TimeoutExceeded(layer, round(self._clock() - started, 3))

    def _fail_step(self, seq: int, error_class: Any, message: str, started: float, hops=None) -> None:
        meta = StepMeta(error_class=str(error_class), duration_ms=(self._clock() - started) * 1000, hops=hops or [])
        self.journal.fail(seq, str(error_class), message[:2000], meta)

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
                return recorded.result
            if recorded.status == "waiting_human":
                raise Suspend(seq, None, "waiting")
            if recorded.status == "decided":
                return self._apply_decision(seq, spec, args, recorded.decision or {}, side_effect)
        verdict = self.policy.evaluate(name, args, value=value, confidence=confidence, retry_count=retry_count)
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
        self.journal.begin(seq, "tool", spec.name, self._phase, {"args": args})
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
            "agent.step", attributes={"agent.step.seq": seq, "agent.step.kind": "tool", "agent.step.name": spec.name}
        ):
            future = _tool_pool.submit(spec.fn, args, idempotency_key=key)
            try:
                result = future.result(timeout=max(0.0, deadline.remaining()))
            except FutureTimeout:
                # The thread cannot be killed; it finishes in the background and its result is dropped.
                error = self._timeout("tool", started)
                self._fail_step(seq, "Timeout", str(error), started)
                raise error from None
            except Exception as exc:
                self._fail_step(seq, type(exc).__name__, str(exc), started)
                raise
        if cache_entry is not None:
            self._tool_cache.set(cache_entry, result)
        self.journal.complete(seq, result, StepMeta(duration_ms=(self._clock() - started) * 1000))
        return result

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
            self._fail_step(seq, type(exc).__name__, str(exc), started)
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
        """Run `fn` as the phase `name` under its step timeout. A critical phase that times out fails the
        run; an optional one is recorded as skipped and `default` is returned."""
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
        self._phase, self._phase_deadline = name, Deadline.after(seconds, clock=self._clock)
        started = self._clock()
        try:
            result = fn()
        except RunInterrupted:  # suspended / cancelled: the phase stays open and resumes with the run
            raise
        except TimeoutExceeded:
            meta = StepMeta(error_class="Timeout", duration_ms=(self._clock() - started) * 1000)
            if critical:
                self.journal.fail(seq, "Timeout", f"phase {name} timed out after {seconds:g} s", meta)
                raise PhaseTimeout(name, seconds) from None
            self.journal.skip(seq, f"optional phase timed out after {seconds:g} s", meta, end_seq=self._seq)
            return default
        except Exception as exc:  # the phase failed with its step; the agent may still handle the error
            meta = StepMeta(error_class=type(exc).__name__, duration_ms=(self._clock() - started) * 1000)
            self.journal.fail(seq, type(exc).__name__, str(exc)[:2000], meta)
            raise
        finally:
            self._phase, self._phase_deadline = None, None
        if recorded is None or recorded.status != "completed":
            self.journal.complete(seq, None, StepMeta(duration_ms=(self._clock() - started) * 1000), end_seq=self._seq)
        return result


class _StepHandoff:
    """The guard's human handoff for one llm step: the journal creates the escalation, the run suspends."""

    def __init__(self, ctx: RunContext, seq: int):
        self.ctx, self.seq = ctx, seq

    def handoff(self, request: LLMRequest, hops: Sequence[Any], reason: str) -> HandoffOutcome:
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
