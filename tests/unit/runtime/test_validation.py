"""Result validation: empty, too short and refusals are rejected with a reason; real answers pass."""

from __future__ import annotations

import pytest

from agentops.runtime.config import RuntimeConfig
from agentops.runtime.errors import ErrorCategory, ErrorClass, ProviderError
from agentops.runtime.validation import (
    DEFAULT_MIN_CHARS,
    DEFAULT_REJECTED_PHRASES,
    RouteValidation,
    ValidationSettings,
    validate_text,
)

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


def test_the_seeds_rules_are_the_defaults():
    """DESIGN.md §11: empty, shorter than 10 characters, "I don't know", "error" (any case) are rejected."""
    assert (DEFAULTS.min_chars, DEFAULTS.rejected_phrases) == (10, ("I don't know", "error"))
    assert (DEFAULT_MIN_CHARS, DEFAULT_REJECTED_PHRASES) == (10, ("I don't know", "error"))
    assert RuntimeConfig().validation == DEFAULTS
    assert reason("") == "empty"
    assert reason("123456789") == "too_short" and reason("1234567890") is None  # 9 and 10 characters
    assert reason("   short   ") == "too_short"  # counted without the surrounding blanks
    assert reason("Honestly, I DON'T KNOW the answer.") == "rejected_phrase"
    assert reason("Honestly, I don’t know the answer.") == "rejected_phrase"  # a typographic apostrophe
    assert reason("The server answered with an Error 500.") == "rejected_phrase"
    assert reason("Several ERRORS were found in the log.") == "rejected_phrase"  # a substring, as the seed's `in`
    assert reason("Paris is the capital of France.") is None


def test_a_rejected_phrase_names_itself_and_is_plain_text():
    with pytest.raises(ProviderError) as info:
        validate_text("An unexpected error occurred upstream.", DEFAULTS)
    assert info.value.reason == "rejected_phrase" and "'error'" in str(info.value)
    literal = ValidationSettings(rejected_phrases=("a+b (c)", ".*", "[unclosed"))
    assert reason("the formula a+b (c) holds", literal) == "rejected_phrase"
    assert reason("aab c matches a regex, not the phrase", ValidationSettings(rejected_phrases=("a+b (c)",))) is None
    assert reason("anything at all, really", ValidationSettings(rejected_phrases=(".*",))) is None
    assert reason("a [unclosed bracket here", literal) == "rejected_phrase"  # no regex, so no re.error
    assert reason("blank phrases are ignored here", ValidationSettings(rejected_phrases=("", "  "))) is None


def test_a_route_replaces_the_minimum_and_the_phrases_for_its_operation():
    settings = ValidationSettings(
        by_operation={"code": RouteValidation(min_chars=0, rejected_phrases=()), "classify": RouteValidation(1)}
    )
    fix = "TypeError: fix line 3"
    assert reason(fix, settings) == "rejected_phrase"  # every other operation: the defaults
    assert reason(fix, settings, operation="code") is None
    assert reason("ok", settings, operation="code") is None
    assert reason("", settings, operation="code") == "empty"  # empty is always rejected
    assert reason("negative", settings, operation="classify") is None
    assert reason("I don't know", settings, operation="classify") == "rejected_phrase"  # its phrases: the defaults
    assert reason("negative", settings, operation="planning") == "too_short"


def test_too_short_is_configurable_and_per_operation():
    loose = ValidationSettings(min_chars=2)
    assert reason("x", loose) == "too_short"
    assert reason("ok", loose) is None
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


def test_an_answer_cut_by_the_callers_max_tokens_is_not_too_short_but_still_checked_otherwise():
    """max_tokens=1 gets a one-word answer: that is what the caller asked for, not a bad answer."""
    validate_text("Mock", DEFAULTS, cut_at_max_tokens=True)
    with pytest.raises(ProviderError) as short:
        validate_text("Mock", DEFAULTS)
    assert short.value.reason == "too_short"
    for text, reason in (("", "empty"), ("Internal error, sorry", "rejected_phrase")):
        with pytest.raises(ProviderError) as rejected:
            validate_text(text, DEFAULTS, cut_at_max_tokens=True)
        assert rejected.value.reason == reason
