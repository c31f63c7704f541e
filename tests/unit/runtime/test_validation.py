"""Result validation: empty, too short and refusals are rejected with a reason; real answers pass."""

from __future__ import annotations

import pytest

from agentops.runtime.errors import ErrorCategory, ErrorClass, ProviderError
from agentops.runtime.validation import ValidationSettings, validate_text

DEFAULTS = ValidationSettings()


def reason(text, settings=DEFAULTS, **kw):
    try:
        validate_text(text, settings, **kw)
    except ProviderError as err:
        assert err.error_class is ErrorClass.REJECTED_ANSWER  # a business failure: category logic
        assert err.category is ErrorCategory.LOGIC
        assert err.transient is False  # asking the same model again rarely helps: next handler
        return err.reason
    return None


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty(text):
    assert reason(text) == "empty"


def test_too_short_is_configurable_and_per_operation():
    assert reason("x") == "too_short"
    assert reason("ok") is None
    strict = ValidationSettings(min_chars=20, min_chars_by_operation={"classify": 1})
    assert reason("a short answer", strict) == "too_short"
    assert reason("a", strict, operation="classify") is None
    assert reason("a short answer", strict, operation="planning") == "too_short"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry, but I can’t help with that.",
        "I cannot help with that request.",
        "I am unable to comply with this.",
        "I won't provide that information.",
        "Sorry, I can't do that.",
        "Unfortunately, I cannot assist.",
        "As an AI language model, I cannot browse the internet.",
        "  I'm afraid I can't do that, Dave.",
    ],
)
def test_default_refusal_patterns(text):
    assert reason(text) == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry to hear that your laptop can't boot. Hold the power button for 10 seconds.",
        "I can't wait to help you plan this trip: day 1 ...",
        "Here is the plan: first, ...",
        "The user cannot log in because the password expired.",
    ],
)
def test_answers_that_mention_not_being_able_are_not_refusals(text):
    assert reason(text) is None


def test_custom_patterns_replace_the_defaults():
    settings = ValidationSettings(refusal_patterns=(r"\bnicht möglich\b",))
    assert reason("Das ist leider nicht möglich.", settings) == "refusal"
    assert reason("I cannot help with that.", settings) is None
    assert reason("I cannot help with that.", ValidationSettings(refusal_patterns=())) is None


def test_disabled_and_tool_calls():
    assert reason("", ValidationSettings(enabled=False)) is None
    assert reason(None, has_tool_calls=True) is None


def test_error_carries_the_target():
    with pytest.raises(ProviderError) as info:
        validate_text("", DEFAULTS, provider="openai", model="gpt-4o")
    assert (info.value.provider, info.value.model, info.value.reason) == ("openai", "gpt-4o", "empty")
