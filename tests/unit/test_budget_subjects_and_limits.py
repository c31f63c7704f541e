"""Pure pieces of the money fixes: the session counter subject (per agent, length-safe), the model-family
lookup that bounds self-reported usage, and the demo traffic's token pacer. The end-to-end proofs are in
tests/integration/api/test_budgets_api.py, tests/integration/gateway/test_gateway.py and
tests/integration/test_demo_traffic.py."""

from __future__ import annotations

import pytest

from agentops.demo.traffic import TokenPacer
from budgets import model_limits
from budgets.actions import directory
from budgets.models import Budget

SESSIONS = Budget(name="per session", scope=Budget.Scope.SESSION)


def test_a_session_subject_is_the_session_of_one_agent():
    caller = directory.Caller(agent="research", session_id="s1")
    assert directory.subject_for(SESSIONS, caller) == "research/s1"
    assert (
        directory.subject_for(SESSIONS, directory.Caller(agent="support-refund", session_id="s1"))
        == "support-refund/s1"
    )
    assert directory.subject_parts(SESSIONS, "research/s1/with/slashes") == ("research", "s1/with/slashes")
    assert directory.subject_label(SESSIONS, "research/s1") == "session s1 of agent research"
    # A keyed session budget names the session id (each agent's session of that id counted on its own).
    keyed = Budget(name="one session", scope=Budget.Scope.SESSION, scope_key="s1")
    assert directory.subject_for(keyed, caller) == "research/s1"
    assert directory.subject_for(keyed, directory.Caller(agent="research", session_id="s2")) is None


def test_a_long_session_subject_fits_the_column_and_never_merges_two_sessions():
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    a = directory.session_subject("research", long_a)
    b = directory.session_subject("research", long_b)
    assert len(a) <= directory.SUBJECT_MAX and len(b) <= directory.SUBJECT_MAX and a != b
    assert a.startswith("research/sha256:")
    assert len(directory.session_subject("a" * 80, long_a)) <= directory.SUBJECT_MAX


@pytest.mark.parametrize(
    ("model", "family", "total"),
    [
        ("gpt-4o", "gpt-4o", 144_384),
        ("gpt-4o-2024-08-06", "gpt-4o", 144_384),
        ("openai/gpt-4o", "gpt-4o", 144_384),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", 144_384),
        ("gpt-4-0613", "gpt-4", 16_384),  # "gpt-4" never matches "gpt-4o…" and vice versa
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet", 208_192),
        ("GPT-3.5-Turbo", "gpt-3.5-turbo", 20_481),
        ("in-house-llm", "", 2_000_000),
        ("gpt-4oops", "", 2_000_000),
    ],
)
def test_a_models_limit_is_its_most_specific_known_family_else_the_ceiling(model, family, total):
    limit = model_limits.token_limit(model)
    assert (limit.model, limit.total) == (family, total)


def test_a_report_over_the_limit_names_the_field_and_the_limit():
    assert model_limits.excess("gpt-4o", 128_000, 16_384) is None
    field, limit, message = model_limits.excess("gpt-4o", 128_001, 0)
    assert (field, limit) == ("input_tokens", 144_384) and "128000" in message
    assert model_limits.excess("gpt-4o", 10, 16_385)[0] == "output_tokens"
    assert model_limits.excess("in-house", 2_000_000, 0) is None
    assert model_limits.excess("in-house", 1_999_999, 2)[:2] == ("output_tokens", 2_000_000)


def test_the_pacer_allows_an_agent_only_below_its_allowance():
    pacer = TokenPacer(10, time_scale=60, head_start_minutes=5, began=100.0)
    assert pacer.allowance(100.0) == 50  # the head start
    assert pacer.allowance(101.0) == 60  # one real second = one minute of allowance at time scale 60
    assert pacer.allows("a", lambda: 49, 100.0) and not pacer.allows("a", lambda: 50, 100.0)
    assert pacer.allows("a", lambda: 59, 101.0)
    assert (pacer.held("a"), pacer.held("b")) == (1, 0)
    # Unpaced: what was spent is never even read.
    assert TokenPacer(0).allows("a", lambda: pytest.fail("read"), 0.0)
