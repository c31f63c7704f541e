"""The guard pipeline with fakes at every edge: scripted providers, a fake clock, recorded sleeps.

Covers fallback order and validation ending in the human handoff, breaker skips, the shared retry budget,
deadlines, adaptive timeouts, cache, budget gate, journal replay, config changes, metrics, log and span.
"""

from __future__ import annotations

import time

import pytest
import structlog

from agentops.observability.metrics import FALLBACKS, LLM_CALLS, LLM_TOKENS
from agentops.runtime.breaker import BreakerSettings
from agentops.runtime.cache import CacheSpec, TwoLevelCache
from agentops.runtime.config import RuntimeConfig, StaticConfigSource, TimeoutSettings
from agentops.runtime.errors import ErrorClass, FallbackExhausted, ProviderError
from agentops.runtime.guard import GuardDeps, GuardResult, LatencyRecorder, guarded_llm, make_breaker_registry
from agentops.runtime.protocols import (
    BudgetExceeded,
    HumanPending,
    HumanRejected,
    MemoryJournal,
    RecordingBudgetGate,
    RecordingUsageSink,
    ScriptedEscalator,
)
from agentops.runtime.providers import LLMRequest, Rule
from agentops.runtime.retry import RetryPolicy, RetrySettings
from agentops.runtime.routing import Route, Target
from agentops.runtime.timeouts import Deadline
from tests.fixtures.runtime import (
    BatchingAdaptive,
    BrokenLedger,
    FakeAdaptive,
    FakeClock,
    ScriptedProvider,
    Sleeper,
)
from tests.fixtures.waiting import wait_for


def perr(cls: ErrorClass, **kw) -> ProviderError:
    return ProviderError(cls, cls.value, **kw)


FAST = RetrySettings(
    default=RetryPolicy(3, 0.1, 1.0, jitter=False),
    by_class={
        ErrorClass.CONNECTION: RetryPolicy(5, 0.05, 1.0, jitter=False),
        ErrorClass.RATE_LIMIT: RetryPolicy(3, 1.0, 10.0, jitter=False),
        ErrorClass.SERVICE_UNAVAILABLE: RetryPolicy(4, 0.2, 5.0, jitter=False),
        ErrorClass.AUTHENTICATION: RetryPolicy(0),
        ErrorClass.BAD_REQUEST: RetryPolicy(0),
    },
    budget=6,
)

CONFIG = RuntimeConfig(
    retry=FAST,
    routes=(Route("planning", (Target("fake", "large"), Target("fake", "small"))),),
    default_chain=(Target("fake", "small"), Target("fake", "large")),
    rules=(Rule(r"\bopening hours\b", "We are open 9-17.", name="hours"),),
    breaker=BreakerSettings(failure_threshold=3, recovery_timeout=30.0),
    cacheable_operations=frozenset({"classify"}),
)


class Harness:
    def __init__(self, config: RuntimeConfig = CONFIG, **deps) -> None:
        self.clock = FakeClock(start=1000.0)
        self.sleep = Sleeper(self.clock)
        self.waits = self.sleep.waits
        self.provider = ScriptedProvider(self.clock)
        self.source = StaticConfigSource(config)
        self.usage = RecordingUsageSink()
        self.escalator = ScriptedEscalator()
        self.budget = RecordingBudgetGate()
        defaults = dict(
            config=self.source,
            providers={"fake": self.provider},
            breakers=make_breaker_registry(None, self.source, clock=self.clock),
            budget=self.budget,
            escalator=self.escalator,
            usage=self.usage,
            clock=self.clock,
            sleep=self.sleep,
        )
        defaults.update(deps)
        self.deps = GuardDeps(**defaults)

    def call(self, text: str = "plan a trip", operation: str = "planning", **kw) -> GuardResult:
        request = LLMRequest([{"role": "user", "content": text}], operation=operation, max_tokens=100)
        return guarded_llm(request, deps=self.deps, **kw)


def outline(result: GuardResult) -> list[tuple]:
    return [(h.handler, h.outcome, h.error_class, h.attempts) for h in result.hops]


def calls(operation: str, outcome: str) -> float:
    return LLM_CALLS.labels(operation, outcome)._value.get()


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_happy_path_records_everything_once(h, spans):
    spans.clear()
    before = calls("planning", "success")
    tokens_before = LLM_TOKENS.labels("large", "input")._value.get()
    with structlog.testing.capture_logs() as logs:
        result = h.call()
    assert (result.text, result.handler, result.model, result.attempts) == ("answer from large", "primary", "large", 1)
    assert outline(result) == [("primary", "ok", None, 1)]
    assert (result.input_tokens, result.output_tokens, result.cache_hit) == (10, 5, False)
    assert h.provider.calls == [("large", 30.0)]  # the layered llm default
    assert len(h.budget.reserved) == 1 and h.budget.reserved[0]["estimated_tokens"] > 100
    assert h.budget.reserved[0]["model"] == "large"
    assert h.budget.settled[0][1]["input_tokens"] == 10 and h.budget.open_reservations == 0
    settled = h.budget.settled[0][1]
    assert settled["model"] == "large" and settled["handler"] == "primary"
    assert h.usage.records == []  # the settled reservation is the call's usage record
    assert calls("planning", "success") - before == 1
    assert LLM_TOKENS.labels("large", "input")._value.get() - tokens_before == 10
    (line,) = [entry for entry in logs if entry["event"] == "llm.call"]
    assert line["operation"] == "planning" and line["handler"] == "primary" and line["attempts"] == 1
    assert line["error_class"] is None and line["duration_ms"] >= 0
    (span,) = [s for s in spans.get_finished_spans() if s.name == "chat large"]  # the attempt (test_genai_spans.py)
    assert span.attributes["gen_ai.request.model"] == "large"
    assert span.attributes["gen_ai.response.model"] == "large"
    assert span.attributes["gen_ai.usage.input_tokens"] == 10
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.operation.name"] == "chat" and span.attributes["gen_ai.provider.name"] == "openai"


def test_transient_errors_are_retried_on_the_same_model(h):
    h.provider.script("large", perr(ErrorClass.CONNECTION), perr(ErrorClass.SERVICE_UNAVAILABLE))
    result = h.call()
    assert result.handler == "primary" and result.attempts == 3
    assert h.waits == [0.05, 0.4]  # connection curve 1st retry, then 503 curve 2nd retry (0.2 × 2)
    assert result.error_class == "ServiceUnavailable"
    assert result.hops[0].waits == (0.05, 0.4)


def test_fallback_order_primary_backup_rules_human(h):
    before = FALLBACKS.labels("backup", "AuthenticationError")._value.get()
    h.provider.script("large", perr(ErrorClass.AUTHENTICATION, status=401))
    result = h.call()
    assert outline(result) == [("primary", "failed", "AuthenticationError", 1), ("backup", "ok", None, 1)]
    assert result.handler == "backup" and result.model == "small" and h.waits == []
    assert FALLBACKS.labels("backup", "AuthenticationError")._value.get() - before == 1

    h.provider.script("large", perr(ErrorClass.BAD_REQUEST))
    h.provider.script("small", perr(ErrorClass.AUTHENTICATION))
    result = h.call("what are your opening hours?")
    assert result.handler == "rules" and result.text == "We are open 9-17."
    assert [hop.outcome for hop in result.hops] == ["failed", "failed", "ok"]

    h.provider.script("large", perr(ErrorClass.BAD_REQUEST))
    h.provider.script("small", perr(ErrorClass.AUTHENTICATION))
    before_human = calls("planning", "human")
    result = h.call("something no rule knows")
    assert result.handler == "human" and result.text == "answer written by a reviewer"
    assert [hop.handler for hop in result.hops] == ["primary", "backup", "rules", "human"]
    assert [hop.outcome for hop in result.hops][-2:] == ["no_rule", "answered"]
    _, hops, reason = h.escalator.calls[-1]
    assert reason == "all_fallbacks_failed" and [x.handler for x in hops] == ["primary", "backup", "rules"]
    assert calls("planning", "human") - before_human == 1
    assert h.budget.settled[-1][1]["input_tokens"] == 0 and h.budget.open_reservations == 0


@pytest.mark.parametrize("text", ["", "I'm sorry, but I can't help with that.", "x"])
def test_an_invalid_answer_moves_on_without_retrying(h, text):
    h.provider.script("large", text)
    result = h.call()
    assert outline(result) == [("primary", "invalid", "RejectedAnswer", 1), ("backup", "ok", None, 1)]
    assert result.hops[0].reason in {"empty", "refusal", "too_short"}


def test_a_malformed_body_is_retried(h):
    h.provider.script("large", perr(ErrorClass.INVALID_RESPONSE, reason="malformed"))
    assert outline(h.call()) == [("primary", "ok", "InvalidResponse", 2)]


def test_human_pending_suspends_and_releases_the_reservation(h):
    h.escalator.pending = True
    h.provider.script("large", "forever")
    h.provider.script("small", "forever")
    before = calls("planning", "pending")
    with pytest.raises(HumanPending) as info:
        h.call()
    assert [hop.outcome for hop in info.value.hops][-1] == "pending"
    assert h.budget.released and h.budget.open_reservations == 0 and not h.budget.settled
    assert calls("planning", "pending") - before == 1
    h.escalator.pending, h.escalator.reject = False, True
    with pytest.raises(HumanRejected):
        h.call()


def test_without_a_handoff_the_chain_raises_with_every_hop():
    h = Harness(escalator=None)
    h.provider.script("large", "forever")
    h.provider.script("small", perr(ErrorClass.AUTHENTICATION))
    with pytest.raises(FallbackExhausted) as info:
        h.call()
    assert [hop.handler for hop in info.value.hops] == ["primary", "backup", "rules"]
    assert info.value.last_error.error_class is ErrorClass.AUTHENTICATION
    assert h.budget.open_reservations == 0


def test_the_retry_budget_is_shared_across_the_chain():
    h = Harness(
        CONFIG.replace(
            retry=RetrySettings(FAST.default, FAST.by_class, budget=5), breaker=BreakerSettings(failure_threshold=100)
        )
    )
    h.provider.script("large", "forever")
    h.provider.script("small", "forever")
    result = h.call("opening hours")
    # 503 allows 4 retries per model; the call's budget of 5 leaves the backup one.
    assert outline(result)[:2] == [
        ("primary", "failed", "ServiceUnavailable", 5),
        ("backup", "failed", "ServiceUnavailable", 2),
    ]
    assert result.hops[1].reason == "budget_exhausted"
    assert result.handler == "rules"


def test_an_open_breaker_is_skipped_and_opens_across_calls(h):
    h.provider.script("large", "forever")
    first = h.call()
    # threshold 3: the 3rd failure of the retry loop opens it; the 4th attempt is refused
    assert outline(first)[0] == ("primary", "breaker_open", "ServiceUnavailable", 3)
    assert first.handler == "backup"
    before = len(h.provider.calls)
    second = h.call()
    assert outline(second)[0] == ("primary", "breaker_open", None, 0)
    assert h.provider.models_called()[before:] == ["small"]
    h.deps.breakers.get("fake", "large").reset()
    h.provider.scripts["large"].clear()
    assert h.call().handler == "primary"


def test_breaker_thresholds_follow_the_config(h):
    h.source.set(CONFIG.replace(breaker_overrides={"fake:large": BreakerSettings(failure_threshold=1)}))
    h.provider.script("large", perr(ErrorClass.CONNECTION))
    assert outline(h.call())[0] == ("primary", "breaker_open", "ConnectionError", 1)


def test_a_permanent_4xx_does_not_count_against_the_breaker(h):
    for _ in range(5):
        h.provider.script("large", perr(ErrorClass.BAD_REQUEST))
        h.call()
    assert h.deps.breakers.get("fake", "large").state().value == "closed"


def test_retry_after_is_capped_by_the_deadline(h):
    h.provider.script("large", perr(ErrorClass.RATE_LIMIT, retry_after=30.0))
    result = h.call(deadline=Deadline.after(10.0, clock=h.clock))
    assert outline(result)[0] == ("primary", "failed", "RateLimitError", 1)
    assert result.hops[0].reason == "deadline" and h.waits == []
    h.provider.script("large", perr(ErrorClass.RATE_LIMIT, retry_after=3.0))
    result = h.call(deadline=Deadline.after(10.0, clock=h.clock))
    assert result.handler == "primary" and h.waits == [3.0]


def test_attempt_timeouts_are_capped_by_the_request_deadline(h):
    h.call(deadline=Deadline.after(4.0, clock=h.clock))
    assert h.provider.calls[-1] == ("large", 4.0)
    h.source.set(CONFIG.replace(timeouts=TimeoutSettings(llm=2.0)))
    h.call(deadline=Deadline.after(4.0, clock=h.clock))
    assert h.provider.calls[-1] == ("large", 2.0)


def test_an_expired_deadline_skips_the_models_but_rules_and_human_still_answer(h):
    deadline = Deadline.after(1.0, clock=h.clock)
    h.clock.now += 2
    result = h.call("opening hours?", deadline=deadline)
    assert [hop.outcome for hop in result.hops] == ["deadline", "deadline", "ok"]
    assert h.provider.calls == []


def test_adaptive_timeouts_are_used_and_fed():
    adaptive = FakeAdaptive(2.5)
    h = Harness(adaptive=adaptive, record_latency_in_background=False)
    h.provider.script("large", perr(ErrorClass.TIMEOUT))
    h.call()
    assert h.provider.calls == [("large", 2.5), ("large", 2.5)]
    # the timed-out attempt is recorded as its limit, the successful one as its duration
    assert adaptive.recorded == [("planning", "large", 2.5), ("planning", "large", 0.01)]
    h.source.set(CONFIG.replace(timeouts=TimeoutSettings(adaptive=False)))
    h.call()
    assert h.provider.calls[-1] == ("large", 30.0)


def test_background_latency_recorder_flushes():
    adaptive = FakeAdaptive(2.5)
    h = Harness(adaptive=adaptive)
    h.call()
    h.deps.latency.flush()
    assert adaptive.recorded == [("planning", "large", 0.01)]


def test_cacheable_operations_hit_the_cache_and_cost_nothing():
    cache = TwoLevelCache(None, CacheSpec("llm", 3600, 10))
    h = Harness(cache=cache)
    first = h.call("is this good?", operation="classify")
    assert first.cache_hit is False and len(h.provider.calls) == 1
    before = calls("classify", "cache_hit")
    second = h.call("is this good?", operation="classify")
    assert second.cache_hit is True and second.handler == "cache" and second.text == first.text
    assert (second.input_tokens, second.output_tokens) == (0, 0)
    assert len(h.provider.calls) == 1 and len(h.budget.reserved) == 1  # no reservation for a hit
    assert h.usage.records[-1]["cache_hit"] is True and h.usage.records[-1]["input_tokens"] == 0
    assert calls("classify", "cache_hit") - before == 1
    h.call("plan", operation="planning")
    h.call("plan", operation="planning")
    assert len(h.provider.calls) == 3  # not cacheable
    h.call("plan", operation="planning", cache=True)
    h.call("plan", operation="planning", cache=True)
    assert len(h.provider.calls) == 4  # cacheable on request
    h.call("other", operation="classify", cache=False)
    h.call("other", operation="classify", cache=False)
    assert len(h.provider.calls) == 6


def test_answers_from_rules_and_humans_are_not_cached():
    h = Harness(cache=TwoLevelCache(None, CacheSpec("llm", 3600, 10)))
    h.provider.script("small", perr(ErrorClass.AUTHENTICATION), perr(ErrorClass.AUTHENTICATION))
    h.provider.script("large", perr(ErrorClass.AUTHENTICATION), perr(ErrorClass.AUTHENTICATION))
    assert h.call("opening hours", operation="classify").handler == "rules"
    assert h.call("opening hours", operation="classify").handler == "rules"


def test_budget_refusal_fails_clearly_without_calling_a_model():
    h = Harness()
    h.budget.limit_tokens = 50
    before = calls("planning", "budget_exceeded")
    with pytest.raises(BudgetExceeded):
        h.call()
    assert h.provider.calls == [] and h.budget.open_reservations == 0
    assert calls("planning", "budget_exceeded") - before == 1


def test_budget_refusal_switches_to_the_cheaper_model_the_policy_names():
    h = Harness()
    gate = RecordingBudgetGate()
    admit = gate.reserve

    def reserve(meta):
        if meta["model"] == "large":
            raise BudgetExceeded("team", "large is over budget", cheaper_model="small")
        return admit(meta)

    gate.reserve = reserve
    h.deps.budget = gate
    result = h.call()
    assert (result.model, result.handler) == ("small", "primary")
    assert [r["model"] for r in gate.reserved] == ["small"] and gate.open_reservations == 0


def test_budget_refusal_can_escalate():
    h = Harness(CONFIG.replace(escalate_budget_exceeded=True))
    h.budget.limit_tokens = 1
    result = h.call()
    assert result.handler == "human" and h.escalator.calls[-1][2] == "budget_exceeded"
    assert h.provider.calls == []


def test_the_refusing_budget_decides_whether_to_escalate():
    def refuse(escalate):
        def reserve(meta):
            raise BudgetExceeded("daily", "daily has 10 of 100 tokens left", escalate=escalate)

        return reserve

    h = Harness(CONFIG.replace(escalate_budget_exceeded=True))
    h.budget.reserve = refuse(False)
    with pytest.raises(BudgetExceeded, match="10 of 100"):
        h.call()
    assert h.escalator.calls == []

    h = Harness(CONFIG.replace(escalate_budget_exceeded=False))
    h.budget.reserve = refuse(True)
    result = h.call()
    _, hops, reason = h.escalator.calls[-1]
    assert result.handler == "human" and reason == "budget_exceeded" and h.provider.calls == []
    assert [(hop.handler, hop.outcome, hop.target, hop.reason) for hop in hops] == [
        ("budget", "refused", "daily", "daily has 10 of 100 tokens left")
    ]
    assert [hop.handler for hop in result.hops] == ["budget", "human"]


def test_a_changed_config_is_used_by_the_next_call(h):
    assert h.call().model == "large"
    h.source.set(CONFIG.replace(routes=(Route("planning", (Target("fake", "medium"),)),)))
    assert h.call().model == "medium"
    h.source.set(CONFIG.replace(rules=(Rule("trip", "Rules say: pack light."),)))
    h.provider.script("large", perr(ErrorClass.BAD_REQUEST))
    h.provider.script("small", perr(ErrorClass.BAD_REQUEST))
    assert h.call().text == "Rules say: pack light."


def test_journal_replays_a_completed_step(h):
    h.deps.journal = MemoryJournal()
    first = h.call(journal_key="run:1:step:3")
    again = h.call(journal_key="run:1:step:3")
    assert again.replayed and again.text == first.text and again.hops == first.hops
    assert len(h.provider.calls) == 1


def test_bugs_stay_loud_and_unknown_providers_are_skipped(h):
    h.provider.script("large", TypeError("bug in a provider"))
    with pytest.raises(TypeError):
        h.call()
    assert h.budget.open_reservations == 0
    h.source.set(CONFIG.replace(routes=(Route("planning", (Target("nowhere", "x"), Target("fake", "small"))),)))
    result = h.call()
    assert outline(result)[0] == ("primary", "no_provider", None, 0) and result.handler == "backup"


def test_result_round_trips_through_a_dict(h):
    h.provider.script("large", perr(ErrorClass.CONNECTION))
    result = h.call()
    assert GuardResult.from_dict(result.to_dict()).hops == result.hops


def test_a_failing_ledger_does_not_lose_a_paid_answer():
    h = Harness(budget=BrokenLedger(), usage=BrokenLedger())
    assert h.call().text == "answer from large"
    h.provider.script("large", perr(ErrorClass.AUTHENTICATION))
    h.provider.script("small", perr(ErrorClass.AUTHENTICATION))
    h.escalator.pending = True
    with pytest.raises(HumanPending):  # the original outcome, not the release failure
        h.call()


def test_messages_that_are_not_json_are_simply_not_cached():
    h = Harness(cache=TwoLevelCache(None, CacheSpec("llm", 3600, 10)))
    request = LLMRequest([{"role": "user", "content": "hi", "when": object()}], operation="classify")
    assert guarded_llm(request, deps=h.deps).cache_hit is False
    assert guarded_llm(request, deps=h.deps).cache_hit is False


def test_config_switch_turns_rules_off_everywhere(h):
    h.source.set(CONFIG.replace(use_rules=False))
    h.provider.script("large", perr(ErrorClass.BAD_REQUEST))
    h.provider.script("small", perr(ErrorClass.BAD_REQUEST))
    result = h.call("opening hours?")
    assert [hop.handler for hop in result.hops] == ["primary", "backup", "human"]


def test_background_latency_recorder_writes_in_batches():
    adaptive = BatchingAdaptive()
    recorder = LatencyRecorder(adaptive, interval=60.0, batch_size=1000)
    recorder.record("op", "m", 0.1)  # the first sample is written at once (nothing written yet)...
    recorder.flush()
    for i in range(50):  # ...then samples pile up for `interval` seconds
        recorder.record("op", "m", float(i))
    time.sleep(0.05)
    assert sum(len(b) for b in adaptive.batches) == 1
    recorder.flush()  # flush() does not wait for the interval
    assert [len(b) for b in adaptive.batches] == [1, 50]
    assert adaptive.batches[1][:2] == [("op", "m", 0.0), ("op", "m", 1.0)]  # oldest first
    assert adaptive.recorded == []  # record() one by one is only the fallback


def test_background_latency_recorder_wakes_early_for_a_full_batch():
    adaptive = BatchingAdaptive()
    recorder = LatencyRecorder(adaptive, interval=60.0, batch_size=20)
    recorder.record("op", "m", 0.1)
    recorder.flush()
    for i in range(21):  # the thread holds the first one while it waits; 20 more wake it
        recorder.record("op", "m", float(i))
    wait_for(lambda: sum(len(b) for b in adaptive.batches) >= 22, timeout=5, interval=0.01, message="the batch")
    assert sum(len(b) for b in adaptive.batches) == 22  # long before the 60 s interval


def test_a_call_without_max_tokens_sends_upstream_the_output_cap_it_reserved():
    h = Harness()
    request = LLMRequest([{"role": "user", "content": "plan a trip"}], operation="planning")
    guarded_llm(request, deps=h.deps)
    cap = CONFIG.default_max_tokens
    assert h.provider.requests[0].max_tokens == cap  # before: None, so the model could answer past the hold
    assert h.budget.reserved[0]["estimated_output_tokens"] == cap


def test_the_prompt_reserved_covers_chinese_text_for_every_model_of_the_chain():
    h = Harness()
    text = "请为客户总结退款政策，并清楚地列出下一步。" * 20
    h.call(text)
    # "large" and "small" have no known tokenizer: every UTF-8 byte may be a token (characters / 4 was 12× short)
    assert h.budget.reserved[0]["estimated_input_tokens"] >= len(text.encode())
