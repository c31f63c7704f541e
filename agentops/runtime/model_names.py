"""What a model's name says: its family without provider prefix or date/version suffix, the names a price may
be listed under (most specific first), and which output-cap parameter it accepts.

Providers answer with versioned names (``gpt-4o`` answers as ``gpt-4o-2024-08-06``, ``gpt-4`` as
``gpt-4-0613``); routers and proxies prefix them (``openai/gpt-4o``, ``anthropic.claude-…-v2:0``); fine-tunes
wrap them (``ft:gpt-4o-mini-2024-07-18:org::id``). A price table lists families, so matching must peel
these layers off in a fixed order rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Suffixes peeled off the end, repeatedly: ISO dates (-2024-08-06), compact dates (-20241022, @20241022),
# OpenAI's month-day snapshots (-0613, -1106, -0125), Bedrock's versions (-v2:0, -v1), and "-latest".
_SUFFIXES = (
    re.compile(r"[-@]\d{4}-\d{2}-\d{2}$"),
    re.compile(r"[-@]\d{8}$"),
    re.compile(r"-\d{4}$"),
    re.compile(r"-v\d+(:\d+)?$"),
    re.compile(r"-latest$"),
)
# Vendor prefixes written with a dot (Bedrock: anthropic.claude-3-5-sonnet-…, us.anthropic.…).
_DOTTED_VENDOR = re.compile(r"^(?:[a-z]{2}\.)?(?:anthropic|openai|meta|mistral|cohere|amazon|ai21)\.")
# OpenAI's embedding models: (width of their vectors, whether ``dimensions`` may ask for fewer).
EMBEDDING_MODELS = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}
EMBEDDING_MAX_INPUT_TOKENS = 8192  # per input, for each of them
# OpenAI's reasoning models refuse ``max_tokens`` and take ``max_completion_tokens``.
_REASONING = re.compile(r"^(o\d+|gpt-5)(\b|-|$)")


def base_model_name(name: str) -> str:
    """``name`` without provider prefix, fine-tune wrapper and date/version suffixes (lower-cased)."""
    base = (name or "").strip().lower()
    if base.startswith("ft:"):  # ft:<base model>:<org>:<suffix>:<id>
        base = base[3:].split(":", 1)[0]
    base = base.rsplit("/", 1)[-1]
    base = _DOTTED_VENDOR.sub("", base)
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            stripped = suffix.sub("", base)
            if stripped != base and stripped:
                base, changed = stripped, True
    return base


def price_names(*names: str) -> list[str]:
    """The names a price row may be listed under, most specific first: each given name as it is (the
    answered name, then the requested and route models), then each one's base name. No duplicates, no
    empty names."""
    exact = [n for n in names if n]
    return _unique([*exact, *(base_model_name(n) for n in exact)])


def _unique(names: Iterable[str]) -> list[str]:
    return [n for n in dict.fromkeys(names) if n]


def is_reasoning_model(name: str) -> bool:
    """OpenAI's o-series and gpt-5 family: ``max_completion_tokens`` only."""
    return bool(_REASONING.match(base_model_name(name)))


def output_cap_field(name: str) -> str:
    """The request field that caps this model's output."""
    return "max_completion_tokens" if is_reasoning_model(name) else "max_tokens"


def embedding_model(name: str) -> tuple[int, bool] | None:
    """``(width, accepts dimensions)`` of a known OpenAI embedding model (dated or prefixed names too), else None."""
    return EMBEDDING_MODELS.get(base_model_name(name))
