"""Result validation: an answer that is empty, too short or a refusal is not an answer.

A failed validation raises a *permanent* ``ProviderError(RejectedAnswer)`` (a business failure, category
``logic``) with ``reason`` ``empty``, ``too_short`` or ``refusal``: asking the same model again rarely helps,
so the fallback chain moves on to the next handler. (A malformed body is a different, transient
``InvalidResponse``, category ``data``, raised by providers.)
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
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    rf"^\W*(?:i(?:'|’)?m|i am)\s+(?:sorry|afraid)\b[^.!?\n]{{0,40}}?\b{_I_CANNOT}\b",
    rf"^\W*{_I_CANNOT}\s+(?:help|assist|comply|do that|provide|answer|fulfil+|support)",
    r"^\W*as an ai(?: language model)?\b[^.!?\n]{0,60}\b(?:cannot|can't|unable|not able)\b",
    rf"^\W*(?:sorry|unfortunately),?\s+(?:but\s+)?{_I_CANNOT}",
)


@dataclass(frozen=True)
class ValidationSettings:
    """What counts as a usable answer. Patterns are case-insensitive regexes searched in the text."""

    enabled: bool = True
    min_chars: int = 2
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS
    # Operations whose answers may legitimately be shorter (e.g. a one-letter label).
    min_chars_by_operation: Mapping[str, int] = field(default_factory=dict)


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
    provider: str | None = None,
    model: str | None = None,
) -> None:
    """Raise ``ProviderError(RejectedAnswer)`` when ``text`` is not a usable answer.

    An answer consisting only of tool calls has no text and is valid.
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
    min_chars = settings.min_chars_by_operation.get(operation, settings.min_chars) if operation else settings.min_chars
    if len(stripped) < min_chars:
        raise fail("too_short", f"answer shorter than {min_chars} characters")
    pattern = compile_refusals(tuple(settings.refusal_patterns))
    if pattern is not None and pattern.search(stripped[:500]):
        raise fail("refusal", "the model refused to answer")
