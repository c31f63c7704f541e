"""Step (phase) timeouts in ``RunContext``: the seed's defaults, critical × optional, tool × LLM call, the
effective timeout of a call inside a phase, and a resumed phase that does not count the human wait.

Pure runtime: a fake clock for LLM calls (``SlowProvider`` spends its seconds on it), a few real
milliseconds for tools (they run on a thread), and the in-memory ``StepLog`` journal."""

from __future__ import annotations

import threading
import time

import pytest

from agentops.runtime.config import RuntimeConfig, StaticConfigSource, TimeoutSettings
from agentops.runtime.context import (
    CRITICAL_PHASES,
    PhaseTimeout,
    RunContext,
    RunSettings,
    Suspend,
    Verdict,
    tool,
)
from agentops.runtime.errors import ErrorClass, ProviderError
from agentops.runtime.guard import GuardDeps
from agentops.runtime.retry import RetryPolicy, RetrySettings
from agentops.runtime.routing import Route, Target
from agentops.runtime.timeouts import STEP_CRITICAL, STEP_DEFAULTS
from tests.fixtures.runtime import FakeClock, ScriptedProvider, Sleeper, SlowProvider, StepLog

SEED_SECONDS = {"planning": 15.0, "tool_search": 10.0, "tool_execution": 45.0, "response_generation": 20.0}
SEED_CRITICAL = {"planning": True, "tool_search": False, "tool_execution": False, "response_generation": True}

CONFIG = RuntimeConfig(
    retry=RetrySettings(default=RetryPolicy(2, 0.1, 1.0, jitter=False), budget=6),
    routes=(Route("planning", (Target("fake", "large"), Target("fake", "small"))),),
    default_chain=(Target("fake", "small"), Target("fake", "large")),
    rules=(),
    timeouts=TimeoutSettings(llm=30.0, adaptive=False),
)

RELEASE = threading.Event()  # set at the end of each test: no tool thread outlives it for long


@tool("unit_phase_wait")
def wait_tool(args, idempotency_key=None):
    RELEASE.wait(float(args.get("seconds", 1)))
    return {"waited": True}


@tool("unit_phase_quick")
def quick_tool(args, idempotency_key=None):
    return {"quick": args.get("n", 0)}


class EscalateTools:
    """The escalation policy: asks a human for the named tools."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def evaluate(self, tool, args, *, value, confidence, retry_count):
        return Verdict(True, "sensitive_operation", "high", "test") if tool in self.names else Verdict(False)


@pytest.fixture(autouse=True)
def _release_tools():
    RELEASE.clear()
    yield
    RELEASE.set()


def context(provider=None, *, clock=None, journal=None, policy=None, **settings) -> RunContext:
    clock = clock or FakeClock(1000.0)
    deps = GuardDeps(
        config=StaticConfigSource(CONFIG),
        providers={"fake": provider or ScriptedProvider(clock)},
        clock=clock,
        sleep=Sleeper(clock),
    )
    return RunContext(
        7,
        journal=journal or StepLog(),
        deps=deps,
        policy=policy or EscalateTools(),
        settings=RunSettings(**settings),
        clock=clock,
    )


def plan(ctx: RunContext) -> str:
    return ctx.llm("planning", [{"role": "user", "content": "plan a refund"}])


def test_the_seeds_step_timeouts_and_critical_flags_are_the_defaults():
    assert STEP_DEFAULTS == SEED_SECONDS and STEP_CRITICAL == SEED_CRITICAL == CRITICAL_PHASES
    assert dict(TimeoutSettings().steps) == SEED_SECONDS and dict(TimeoutSettings().critical) == SEED_CRITICAL
    settings = RunSettings()
    assert dict(settings.phase_timeouts) == SEED_SECONDS and dict(settings.critical_phases) == SEED_CRITICAL


# --- LLM calls inside a phase -------------------------------------------------------------------------
def test_a_slow_llm_call_in_a_critical_phase_fails_the_run_instead_of_asking_a_human():
    clock = FakeClock(1000.0)
    provider = SlowProvider(clock, seconds=40.0)
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal)

    with pytest.raises(PhaseTimeout, match="critical phase 'planning' timed out after 15 s"):
        ctx.phase("planning", lambda: plan(ctx))

    # the call got min(phase 15 s, llm 30 s); then no time was left for the backup, and nobody was asked
    assert provider.calls == [("large", 15.0)]
    assert journal.escalations == []
    phase, call = journal.steps[1], journal.steps[2]
    assert (phase["kind"], phase["status"], phase["error_class"]) == ("phase", "failed", "Timeout")
    assert phase["error"] == "critical phase planning timed out after 15 s: the run fails"
    assert phase["duration_ms"] == pytest.approx(15_000)
    assert (call["kind"], call["status"], call["error_class"], call["phase"]) == (
        "llm",
        "failed",
        "Timeout",
        "planning",
    )
    assert "phase 'planning' ran out of its 15 s during llm call 'planning'" in call["error"]
    assert [(h["handler"], h["outcome"]) for h in call["hops"]] == [("primary", "failed"), ("backup", "deadline")]


def test_a_slow_llm_call_in_an_optional_phase_is_skipped_and_the_run_goes_on():
    clock = FakeClock(1000.0)
    provider = SlowProvider(clock, seconds=12.0)
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal)

    found = ctx.phase("tool_search", lambda: ctx.llm("search", [{"role": "user", "content": "find tools"}]))

    assert found is None and provider.calls == [("small", 10.0)] and journal.escalations == []
    phase = journal.steps[1]
    assert (phase["status"], phase["error_class"], phase["end_seq"]) == ("skipped", "Timeout", 2)
    assert phase["error"] == "optional phase tool_search timed out after 10 s: skipped, the run goes on without it"
    # the run goes on: the next call (outside any phase) answers
    provider.seconds = 1.0
    assert plan(ctx) == "a slow but complete answer"
    assert journal.steps[3]["status"] == "completed"

    # replayed, the skipped phase is skipped again with its inner step, and the later step replays
    resumed = context(provider, clock=clock, journal=journal.resumed())
    assert resumed.phase("tool_search", lambda: pytest.fail("a skipped phase does not run again")) is None
    assert resumed._seq == 2
    assert len(provider.calls) == 2


def test_an_answer_after_the_phase_deadline_is_not_used_but_its_tokens_count():
    clock = FakeClock(1000.0)
    provider = SlowProvider(clock, seconds=25.0, honour_timeout=False)  # a provider that overruns the timeout
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal)

    with pytest.raises(PhaseTimeout):
        ctx.phase("response_generation", lambda: plan(ctx))
    call = journal.steps[2]
    assert (call["status"], call["error_class"], call["tokens"]) == ("failed", "Timeout", (10, 5))
    assert "the answer came too late" in call["error"]
    assert ctx.tokens == {"input": 10, "output": 5}


def test_an_llm_call_gets_the_smaller_of_its_own_timeout_and_the_phases_remaining_time():
    clock = FakeClock(1000.0)
    provider = SlowProvider(clock, seconds=1.0)
    ctx = context(provider, clock=clock)

    def planning():
        plan(ctx)  # 15 s left: the llm timeout (30 s) is capped at 15
        clock.advance(11.0)  # the agent's own work
        plan(ctx)  # 3 s left

    ctx.phase("planning", planning)
    assert [timeout for _, timeout in provider.calls] == [15.0, pytest.approx(3.0)]

    ctx.phase("planning", lambda: plan(ctx), timeout=120.0)  # a long phase: the llm timeout is the bound
    assert provider.calls[-1][1] == 30.0


def test_a_failing_provider_inside_a_phase_with_time_left_still_goes_to_a_human():
    clock = FakeClock(1000.0)
    provider = ScriptedProvider(clock).script("large", "forever").script("small", "forever")
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal)
    with pytest.raises(Suspend) as suspended:
        ctx.phase("planning", lambda: plan(ctx), timeout=300.0)
    assert suspended.value.reason == "all_fallbacks_failed"
    assert [e["reason"] for e in journal.escalations] == ["all_fallbacks_failed"]
    assert journal.steps[1]["status"] == "running"  # the phase stays open for the resumed run


def test_agent_code_cannot_swallow_a_phase_timeout():
    clock = FakeClock(1000.0)
    ctx = context(SlowProvider(clock, seconds=40.0), clock=clock)

    def stubborn():
        try:
            plan(ctx)
        except Exception:  # agent code catching its own errors: the phase timeout is no Exception
            pytest.fail("a phase timeout must not be catchable as an Exception")
        return "went on"

    assert ctx.phase("tool_execution", stubborn) is None


# --- tools inside a phase ---------------------------------------------------------------------------
def test_a_slow_tool_in_a_critical_phase_fails_the_run():
    journal = StepLog()
    ctx = real_time_context(journal, phase_timeouts={"response_generation": 0.05})
    with pytest.raises(PhaseTimeout, match=r"'response_generation' timed out after 0\.05 s"):
        ctx.phase("response_generation", lambda: ctx.tool("unit_phase_wait", {"seconds": 5}))
    assert [(s["kind"], s["status"], s["error_class"]) for s in journal.steps.values()] == [
        ("phase", "failed", "Timeout"),
        ("tool", "failed", "Timeout"),
    ]


def test_a_slow_tool_in_an_optional_phase_is_skipped_by_default_tool_execution_too():
    journal = StepLog()
    real = real_time_context(journal, phase_timeouts={"tool_execution": 0.05, "tool_search": 0.05})
    assert real.phase("tool_search", lambda: real.tool("unit_phase_wait", {"seconds": 5})) is None
    assert real.phase("tool_execution", lambda: real.tool("unit_phase_wait", {"seconds": 5})) is None
    assert real.tool("unit_phase_quick", {"n": 3}) == {"quick": 3}  # the run goes on
    statuses = [(s["kind"], s["name"], s["status"]) for s in journal.steps.values()]
    assert statuses == [
        ("phase", "tool_search", "skipped"),
        ("tool", "unit_phase_wait", "failed"),
        ("phase", "tool_execution", "skipped"),
        ("tool", "unit_phase_wait", "failed"),
        ("tool", "unit_phase_quick", "completed"),
    ]


def test_critical_flags_follow_the_settings():
    journal = StepLog()
    strict = real_time_context(
        journal, phase_timeouts={"tool_execution": 0.05}, critical_phases={"tool_execution": True}
    )
    with pytest.raises(PhaseTimeout):
        strict.phase("tool_execution", lambda: strict.tool("unit_phase_wait", {"seconds": 5}))
    lenient = real_time_context(StepLog(), phase_timeouts={"planning": 0.05}, critical_phases={"planning": False})
    assert lenient.phase("planning", lambda: lenient.tool("unit_phase_wait", {"seconds": 5})) is None


def real_time_context(journal: StepLog, **settings) -> RunContext:
    """Tools run on a thread and are waited for in real time."""
    deps = GuardDeps(config=StaticConfigSource(CONFIG), providers={}, clock=time.monotonic)
    return RunContext(7, journal=journal, deps=deps, policy=EscalateTools(), settings=RunSettings(**settings))


# --- a resumed phase ----------------------------------------------------------------------------------
def test_a_resumed_phase_has_what_was_left_and_the_human_wait_is_not_counted():
    clock = FakeClock(1000.0)
    provider = SlowProvider(clock, seconds=1.0)
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal, policy=EscalateTools("unit_phase_quick"))

    def execution():
        plan(ctx_now[0])  # 1 s
        clock.advance(3.0)  # 4 s used
        ctx_now[0].tool("unit_phase_quick", {"n": 1})  # a human must approve: the run suspends
        return plan(ctx_now[0])

    ctx_now = [ctx]
    with pytest.raises(Suspend):
        ctx.phase("response_generation", execution)
    assert journal.steps[1]["status"] == "running" and journal.steps[1]["duration_ms"] == pytest.approx(4000)

    clock.advance(3600.0)  # an hour waiting for the reviewer
    resumed_journal = journal.resumed({3: {"decision": "approved"}})
    ctx_now[0] = context(provider, clock=clock, journal=resumed_journal)
    assert ctx_now[0].phase("response_generation", execution) == "a slow but complete answer"
    # 20 s - 4 s used before the suspension - 3 s of the agent's own code, run again on resume (the call
    # before it replays at once) = 13 s for the last call; the hour of waiting counts for nothing
    assert provider.calls[-1][1] == pytest.approx(13.0)
    phase = resumed_journal.steps[1]
    assert phase["status"] == "completed" and phase["duration_ms"] == pytest.approx(8000)


def test_a_resumed_phase_that_had_used_its_time_times_out_at_once():
    clock = FakeClock(1000.0)
    journal = StepLog()
    ctx = context(
        SlowProvider(clock, seconds=1.0), clock=clock, journal=journal, policy=EscalateTools("unit_phase_quick")
    )

    def slow_then_sensitive(c):
        clock.advance(8.0)  # of tool_search's 10 s
        c.tool("unit_phase_quick", {"n": 1})
        return "done"

    with pytest.raises(Suspend):
        ctx.phase("tool_search", lambda: slow_then_sensitive(ctx))
    assert journal.steps[1]["duration_ms"] == pytest.approx(8000)
    resumed_journal = journal.resumed({2: {"decision": "approved"}})
    again = context(SlowProvider(clock, seconds=1.0), clock=clock, journal=resumed_journal)
    assert again.phase("tool_search", lambda: slow_then_sensitive(again)) is None  # 8 s more: past the 2 s left
    assert resumed_journal.steps[1]["status"] == "skipped"
    assert resumed_journal.steps[1]["duration_ms"] == pytest.approx(16_000)


def test_provider_timeouts_outside_a_phase_are_retried_as_before():
    clock = FakeClock(1000.0)
    provider = ScriptedProvider(clock).script("large", ProviderError(ErrorClass.TIMEOUT, "slow"))
    journal = StepLog()
    ctx = context(provider, clock=clock, journal=journal)
    assert plan(ctx) == "answer from large"  # retried: no phase, no phase timeout
    assert journal.steps[1]["status"] == "completed" and provider.models_called() == ["large", "large"]
