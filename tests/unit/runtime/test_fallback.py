"""The fallback chain on its own: order, hop records, flags per route, metrics, validation, handoff."""

from __future__ import annotations

import pytest

from agentops.observability.metrics import ERRORS, FALLBACKS
from agentops.runtime.config import RuntimeConfig
from agentops.runtime.errors import ErrorClass, FallbackExhausted, ProviderError
from agentops.runtime.fallback import ChainContext, Hop, run_chain
from agentops.runtime.protocols import HumanPending, ScriptedEscalator
from agentops.runtime.providers import LLMRequest, Rule
from agentops.runtime.retry import RetryBudget, RetryPolicy, RetrySettings
from agentops.runtime.routing import Route, Target
from agentops.runtime.timeouts import Deadline
from agentops.runtime.validation import RouteValidation, ValidationSettings
from tests.fixtures.runtime import FakeClock, ScriptedProvider, Sleeper

ROUTE = Route("op", (Target("p", "a"), Target("p", "b"), Target("p", "c")))
CONFIG = RuntimeConfig(
    retry=RetrySettings(default=RetryPolicy(1, 0.5, jitter=False), by_class={}, budget=10),
    rules=(Rule("weather", "It is sunny.", name="weather"),),
)


def run(outcomes, *, route=ROUTE, config=CONFIG, escalator=None, text="hello", deadline=60.0):
    clock = FakeClock()
    provider = ScriptedProvider(clock, "p", 0.002, answer="{model} says hello", tokens=(3, 4), finish_reason=None)
    for model, scripted in outcomes.items():
        provider.script(model, *scripted)
    sleep = Sleeper(clock)
    ctx = ChainContext(
        config=config,
        providers={"p": provider},
        deadline=Deadline.after(deadline, clock=clock),
        retry_budget=RetryBudget(config.retry.budget),
        escalator=escalator,
        sleep=sleep,
        clock=clock,
    )
    request = LLMRequest([{"role": "user", "content": text}], operation="op")
    return run_chain(request, route, ctx), provider, sleep.waits, ctx


def unavailable() -> ProviderError:
    return ProviderError(ErrorClass.SERVICE_UNAVAILABLE, "down", status=503)


def test_the_first_handler_that_answers_wins_and_every_hop_is_recorded():
    before = FALLBACKS.labels("backup_2", "ServiceUnavailable")._value.get()
    errors_before = ERRORS.labels("ServiceUnavailable", "dependency")._value.get()
    outcome, provider, slept, ctx = run({"a": [ProviderError(ErrorClass.BAD_REQUEST)], "b": [unavailable()] * 2})
    assert outcome.handler == "backup_2" and outcome.result.text == "c says hello"
    assert provider.models_called() == ["a", "b", "b", "c"]
    assert [(h.handler, h.outcome, h.error_class, h.attempts, h.reason) for h in outcome.hops] == [
        ("primary", "failed", "BadRequest", 1, "permanent"),
        ("backup", "failed", "ServiceUnavailable", 2, "max_retries"),
        ("backup_2", "ok", None, 1, None),
    ]
    assert outcome.hops[1].waits == (0.5,) and slept == [0.5]
    assert outcome.hops[1].status == 503 and outcome.hops[1].target == "p:b"
    assert outcome.hops[1].duration_ms == pytest.approx(504.0)
    assert outcome.attempts == 4 and outcome.last_error.error_class is ErrorClass.SERVICE_UNAVAILABLE
    assert [e.error_class for e in ctx.errors_seen] == [ErrorClass.BAD_REQUEST] + [ErrorClass.SERVICE_UNAVAILABLE] * 2
    assert FALLBACKS.labels("backup_2", "ServiceUnavailable")._value.get() - before == 1
    assert ERRORS.labels("ServiceUnavailable", "dependency")._value.get() - errors_before == 2


def test_validation_uses_the_configured_settings():
    strict = CONFIG.replace(validation=ValidationSettings(min_chars=50))
    outcome, *_ = run({}, config=strict, route=Route("op", (Target("p", "a"),)), text="weather?")
    assert [(h.handler, h.outcome, h.reason) for h in outcome.hops] == [
        ("primary", "invalid", "too_short"),
        ("rules", "ok", None),
    ]
    assert outcome.result.text == "It is sunny." and outcome.result.provider == "rules"


def test_route_flags_turn_rules_and_human_off():
    escalator = ScriptedEscalator()
    route = Route("op", (Target("p", "a"),), use_rules=False, use_human=False)
    with pytest.raises(FallbackExhausted) as info:
        run({"a": [ProviderError(ErrorClass.AUTHENTICATION)]}, route=route, escalator=escalator, text="weather")
    assert [h.handler for h in info.value.hops] == ["primary"] and escalator.calls == []
    assert "AuthenticationError" in str(info.value)


def test_the_human_gets_the_hops_and_the_reason():
    escalator = ScriptedEscalator(answer="done by hand")
    route = Route("op", (Target("p", "a"),))
    outcome, *_ = run({"a": [ProviderError(ErrorClass.AUTHENTICATION)]}, route=route, escalator=escalator)
    assert outcome.handler == "human" and outcome.result.text == "done by hand"
    assert outcome.result.raw == {"escalation_id": 1, "reviewer": "test-reviewer"}
    _, hops, reason = escalator.calls[0]
    assert reason == "all_fallbacks_failed" and [h.outcome for h in hops] == ["failed", "no_rule"]


def test_human_pending_carries_the_hops():
    route = Route("op", (Target("p", "a"),))
    with pytest.raises(HumanPending) as info:
        run({"a": [ProviderError(ErrorClass.AUTHENTICATION)]}, route=route, escalator=ScriptedEscalator(pending=True))
    assert [h.outcome for h in info.value.hops] == ["failed", "no_rule", "pending"]


def test_a_route_without_models_goes_straight_to_rules():
    outcome, provider, *_ = run({}, route=Route("op", ()), text="weather today?")
    assert outcome.handler == "rules" and provider.models_called() == []


def test_hops_round_trip():
    hop = Hop("backup", "failed", "p:b", "Timeout", 3, 12.5, "max_retries", (0.5, 1.0), None)
    assert Hop.from_dict(hop.to_dict()) == hop


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty"),
        ("too short", "too_short"),  # 9 characters: under the seed's 10
        ("Sorry, I don't know that one.", "rejected_phrase"),
        ("An ERROR occurred while thinking.", "rejected_phrase"),
    ],
)
def test_each_seed_rule_moves_the_call_to_the_next_handler(answer, reason):
    """With the default settings (the seed's rules), a rejected answer goes to the backup, which answers."""
    outcome, provider, _, _ = run({"a": [answer]}, config=CONFIG)
    assert outcome.handler == "backup" and outcome.result.text == "b says hello"
    assert [(h.handler, h.outcome, h.reason) for h in outcome.hops[:2]] == [
        ("primary", "invalid", reason),
        ("backup", "ok", None),
    ]
    assert provider.models_called() == ["a", "b"]  # a rejected answer is not retried on the same model


def test_a_route_of_its_own_turns_the_phrases_off():
    own = CONFIG.replace(validation=ValidationSettings(by_operation={"op": RouteValidation(0, ())}))
    outcome, *_ = run({"a": ["error"]}, config=own)
    assert outcome.handler == "primary" and outcome.result.text == "error"
