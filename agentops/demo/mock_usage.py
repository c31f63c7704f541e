"""How the mock answers like the real API: the dated snapshot name it answers with, and token counts made
with OpenAI's tokenizer (bpe_openai, as agentops.runtime.tokens counts), so every test sees what real providers bill."""

from __future__ import annotations

import functools
from typing import Any

import bpe_openai

from agentops.runtime.tokens import UnboundedInput, encoding_name, image_tokens


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


# What the real API answers for an undated name: its current snapshot.
DATED_NAMES = {
    "gpt-4": "gpt-4-0613",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-3-opus-latest": "claude-3-opus-20240229",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "text-embedding-ada-002": "text-embedding-ada-002-v2",  # the text-embedding-3 models answer as asked
}


def answered_name(model: str) -> str:
    return DATED_NAMES.get(model, model)


def count_tokens(text: str, model: str = "") -> int:
    """Tokens of ``text`` as OpenAI counts them (the model's tokenizer; o200k_base for names it does not know)."""
    if not text:
        return 0
    return len(_encoding(model).encode(text, disallowed_special=()))


@functools.cache
def _tokenizer(name: str) -> Any:
    """OpenAI's tokenizer ``name`` (built once per process)."""
    return bpe_openai.get_encoding(name)


def _encoding(model: str) -> Any:
    return _tokenizer(encoding_name(model) or "o200k_base")


def warm() -> None:
    """Load the tokenizers now, so that no request's timing includes loading them."""
    for name in ("o200k_base", "cl100k_base"):
        _tokenizer(name)


def approx_tokens(text: str, model: str = "") -> int:
    return count_tokens(text, model)


def cut_to_tokens(text: str, limit: int, model: str) -> str:
    encoding = _encoding(model)
    return encoding.decode(encoding.encode(text, disallowed_special=())[:limit])


def _content_tokens(content: Any, model: str) -> int:
    if not isinstance(content, list):
        return count_tokens(text_of(content), model)
    total = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            total += _image_tokens(part, model)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            total += count_tokens(part["text"], model)
    return total


def _image_tokens(part: dict[str, Any], model: str) -> int:
    try:
        return image_tokens(part, model)
    except UnboundedInput:
        return 85  # a model with no documented rule: the low-detail price


def prompt_tokens(messages: list[Any], model: str = "") -> int:
    total = 3
    for m in messages:
        if isinstance(m, dict):
            total += _content_tokens(m.get("content"), model) + 3
    return total
