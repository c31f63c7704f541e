"""Result validation: an answer that is empty, too short, says a rejected phrase or refuses is not an answer.

The seed's rules are the defaults (DESIGN.md §11): an empty answer, one shorter than 10 characters, and one
containing "I don't know" or "error" (case-insensitive) go to the next handler. The rejected phrases are plain
text, matched as a case-insensitive substring (never a regex, so a phrase like ``a+b (c)`` means exactly
that), with typographic apostrophes read as ``'``; a route (``RouteValidation``) may replace the minimum
length and the phrase list, e.g. a coding route whose answers legitimately mention "error".

A failed validation raises a *permanent* ``ProviderError(RejectedAnswer)`` (a business failure, category
``logic``) with ``reason`` ``empty``, ``too_short``, ``rejected_phrase`` or ``refusal``: asking the same model
again rarely helps, so the fallback chain moves on to the next handler. (A malformed body is a different,
transient ``InvalidResponse``, category ``data``, raised by providers.) Streamed answers are not validated:
their text is sent to the client as it arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from agentops.runtime.errors import ErrorClass, ProviderError

# A refusal is the model declining in the first person ("I can't help with that"), not an answer that
# mentions something that cannot happen ("I'm sorry your laptop can't boot; try this").
_I_CANNOT = r"i\s+(?:can(?:no|'|’)?t|won(?:'|’)?t|will not|am unable to|am not able to)"
# The seed's defaults (DESIGN.md §11).
DEFAULT_MIN_CHARS = 10
DEFAULT_REJECTED_PHRASES: tuple[str, ...] = ("I don't know", "error")
# The reasons a validation failure carries (the fallback chain records the hop as "invalid").
VALIDATION_REASONS = frozenset({"empty", "too_short", "rejected_phrase", "refusal"})

DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    rf"^\W*(?:i(?:'|’)?m|i am)\s+(?:sorry|afraid)\b[^.!?\n]{{0,40}}?\b{_I_CANNOT}\b",
    rf"^\W*{_I_CANNOT}\s+(?:help|assist|comply|do that|provide|answer|fulfil+|support)",
    r"^\W*as an ai(?: language model)?\b[^.!?\n]{0,60}\b(?:cannot|can't|unable|not able)\b",
    rf"^\W*(?:sorry|unfortunately),?\s+(?:but\s+)?{_I_CANNOT}",
)


@dataclass(frozen=True)
class RouteValidation:
    """A route's own checks: they replace the global minimum length and rejected phrases for its operation
    (an empty ``rejected_phrases`` checks none; ``min_chars`` 0 or 1 only rejects an empty answer)."""

    min_chars: int = DEFAULT_MIN_CHARS
    rejected_phrases: tuple[str, ...] = DEFAULT_REJECTED_PHRASES


@dataclass(frozen=True)
class ValidationSettings:
    """What counts as a usable answer. ``rejected_phrases`` are plain text (case-insensitive substrings);
    ``refusal_patterns`` are case-insensitive regexes searched at the start of the text."""

    enabled: bool = True
    min_chars: int = DEFAULT_MIN_CHARS
    rejected_phrases: tuple[str, ...] = DEFAULT_REJECTED_PHRASES
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS
    # Operations whose answers may legitimately be shorter (e.g. a one-letter label).
    min_chars_by_operation: Mapping[str, int] = field(default_factory=dict)
    # Per route (keyed by its operation): its own minimum length and phrases instead of the two above.
    by_operation: Mapping[str, RouteValidation] = field(default_factory=dict)

    def for_operation(self, operation: str | None) -> tuple[int, tuple[str, ...]]:
        """The minimum length and the rejected phrases that apply to ``operation``."""
        if operation:
            route = self.by_operation.get(operation)
            if route is not None:
                return route.min_chars, route.rejected_phrases
            return self.min_chars_by_operation.get(operation, self.min_chars), self.rejected_phrases
        return self.min_chars, self.rejected_phrases


def _fold(text: str) -> str:
    """Case-insensitive, apostrophe-insensitive form for substring matching (’ and ‘ read as ')."""
    return text.replace("\u2019", "'").replace("\u2018", "'").casefold()


@lru_cache(maxsize=64)
def fold_phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(phrase as written, folded phrase) for every non-blank phrase, once per distinct list."""
    return tuple((p.strip(), _fold(p.strip())) for p in phrases if p.strip())


def rejected_phrase(text: str, phrases: tuple[str, ...]) -> str | None:
    """The first phrase of ``phrases`` that ``text`` contains (plain, case-insensitive), else None."""
    folded = _fold(text)
    for written, phrase in fold_phrases(tuple(phrases)):
        if phrase in folded:
            return written
    return None


@lru_cache(maxsize=64)
def compile_refusals(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled alternation per distinct pattern list (configs are rebuilt; the regex is not)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.DOTALL)


def validate_text(
    text: str | None,
    settings: ValidationSettings,
    *,
    operation: str | None = None,
    has_tool_calls: bool = False,
    cut_at_max_tokens: bool = False,
    provider: str | None = None,
    model: str | None = None,
) -> None:
    """Raise ``ProviderError(RejectedAnswer)`` when ``text`` is not a usable answer.

    An answer consisting only of tool calls has no text and is valid. An answer the caller's own
    ``max_tokens`` cut short (``cut_at_max_tokens``: finish reason ``length``) is not held to the minimum
    length: it is as long as it was allowed to be, and another model would be cut the same way.
    """
    if not settings.enabled or has_tool_calls:
        return

    def fail(reason: str, message: str) -> ProviderError:
        return ProviderError(
            ErrorClass.REJECTED_ANSWER, message, transient=False, reason=reason, provider=provider, model=model
        )

    stripped = (text or "").strip()
    if not stripped:
        raise fail("empty", "empty answer")
    min_chars, phrases = settings.for_operation(operation)
    if len(stripped) < min_chars and not cut_at_max_tokens:
        raise fail("too_short", f"answer shorter than {min_chars} characters")
    phrase = rejected_phrase(stripped, phrases) if phrases else None
    if phrase is not None:
        raise fail("rejected_phrase", f"answer contains the rejected phrase {phrase!r}")
    pattern = compile_refusals(tuple(settings.refusal_patterns))
    if pattern is not None and pattern.search(stripped[:500]):
        raise fail("refusal", "the model refused to answer")
