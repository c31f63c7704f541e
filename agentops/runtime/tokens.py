"""Upper bounds of the input tokens a request can be charged for, so a reservation bounds the charge.

Text is counted with the model's own tokenizer where one ships with a package (OpenAI's ``o200k_base`` and
``cl100k_base``, through ``bpe-openai``, which carries its token tables: ``tiktoken`` downloads them at first
use, which fails on machines without internet). For any other model the count is the text's UTF-8 length:
every token of a byte-level BPE covers at least one byte, so no tokenizer can count more (Chinese text is
3 bytes a character and about 1 token a character, so the old ``characters / 4`` undercounted it ~4×).

Images follow the providers' documented rules (OpenAI's 512-px tiles or 32-px patches, Anthropic's
``width × height / 750``), with the image's own size when it is inline (a data URL) and the rule's worst case
when it is a link (the app never fetches it). A part whose model has no documented bound raises
``UnboundedInput``: the caller refuses the request (400) rather than reserve a guess.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from agentops.runtime.model_names import base_model_name

# OpenAI's chat framing: every message costs a few tokens around its content, every answer 3 to start.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
TOKENS_PER_TOOL = 12  # the function wrapper around each tool's JSON schema

_O200K = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d|gpt-oss|codex)")
_CL100K = re.compile(r"^(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada)")


class UnboundedInput(ValueError):
    """A request part whose tokens the model's provider documents no bound for (refuse, don't guess)."""

    def __init__(self, message: str, *, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


@functools.cache
def _encoding(name: str) -> Any:
    import bpe_openai  # noqa: PLC0415  (a second to import: warm() pays it once at start-up, off the caller's path)

    return bpe_openai.get_encoding(name)


def warm(*, background: bool = False) -> None:
    """Load the tokenizers now (about a second, mostly the package's import) rather than in the first call
    that needs them; ``background`` does it in a daemon thread so a process starts without waiting."""
    if background:
        threading.Thread(target=warm, name="tokenizer-warm-up", daemon=True).start()
        return
    for name in ("o200k_base", "cl100k_base"):
        _encoding(name)


def encoding_name(model: str) -> str | None:
    """The tokenizer the model uses, when one is installed; None means "count UTF-8 bytes"."""
    base = base_model_name(model)
    if _O200K.match(base):
        return "o200k_base"
    if _CL100K.match(base):
        return "cl100k_base"
    return None


def text_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model``: exact with its tokenizer, else its UTF-8 length (an upper bound)."""
    if not text:
        return 0
    name = encoding_name(model)
    if name is None:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(_encoding(name).encode(text, disallowed_special=()))


# --- images ------------------------------------------------------------------------------------------------
# (base, per 512-px tile) of OpenAI's tile rule, by model family (most specific prefix first).
_TILE_RULES = (
    ("gpt-4o-mini", 2833, 5667),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("gpt-4o", 85, 170),
    ("chatgpt-4o", 85, 170),
    ("gpt-4.5", 85, 170),
    ("gpt-4.1", 85, 170),
    ("gpt-4-turbo", 85, 170),
    ("gpt-4-vision", 85, 170),
    ("gpt-5", 70, 140),
)
# Multipliers of OpenAI's 32-px patch rule (at most 1536 patches an image).
_PATCH_RULES = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("o4-mini", 1.72),
)
MAX_PATCHES = 1536
ANTHROPIC_MAX_IMAGE_TOKENS = 1600  # images are resized to ≤ 1.15 megapixels: ≈ 1600 tokens at most


def _image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of an inline image (``data:image/…;base64,…``), read from its header only."""
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    if ";base64" not in header:
        return None
    try:
        from PIL import Image  # noqa: PLC0415  (only a request with an image pays Pillow's import)

        raw = base64.b64decode(data[: 64 * 1024 * 4 // 3 + 4], validate=False)  # headers sit at the start
        with Image.open(io.BytesIO(raw)) as image:
            return image.size
    except Exception:  # not an image Pillow can read (or a decompression bomb): the rule's worst case
        return None


def _tiles(width: int, height: int) -> int:
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    return math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def image_tokens(part: Mapping[str, Any], model: str) -> int:
    """The most an image part can cost on ``model`` (raises ``UnboundedInput`` for an unknown model)."""
    image = part.get("image_url")
    if isinstance(image, Mapping):
        url, detail = str(image.get("url") or ""), str(image.get("detail") or "auto")
    else:  # a bare URL string, or a malformed part the provider will refuse: reserved at the worst case
        url, detail = (image if isinstance(image, str) else ""), "auto"
    size = _image_size(url)
    size = size if size and min(size) > 0 else None
    base = base_model_name(model)
    for prefix, multiplier in _PATCH_RULES:
        if base.startswith(prefix):
            patches = math.ceil(size[0] / 32) * math.ceil(size[1] / 32) if size else MAX_PATCHES
            return math.ceil(min(patches, MAX_PATCHES) * multiplier)
    for prefix, fixed, per_tile in _TILE_RULES:
        if base.startswith(prefix):
            if detail == "low":
                return fixed
            return fixed + per_tile * (_tiles(*size) if size else 8)  # 8 tiles: 768 × 2048, the largest
    if "claude" in base:
        if size:
            return min(ANTHROPIC_MAX_IMAGE_TOKENS, math.ceil(size[0] * size[1] / 750))
        return ANTHROPIC_MAX_IMAGE_TOKENS
    raise UnboundedInput(
        f"The model {model!r} has no known bound for the tokens of an image, so no budget can be reserved for "
        "it; send images to a model with a documented image rule (gpt-4o, gpt-4.1, o-series, claude)."
    )


# --- messages ----------------------------------------------------------------------------------------------
def content_tokens(content: Any, model: str) -> int:
    """Tokens of a message's ``content``: a string, or a list of text and image parts."""
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content, model)
    if not isinstance(content, Sequence):
        return text_tokens(json.dumps(content, ensure_ascii=False, default=str), model)
    total = 0
    for part in content:
        if isinstance(part, str):
            total += text_tokens(part, model)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "image_url":
            total += image_tokens(part, model)
        elif isinstance(part.get("text"), str):  # text, input_text, output_text
            total += text_tokens(part["text"], model)
        elif isinstance(part.get("refusal"), str):
            total += text_tokens(part["refusal"], model)
        else:
            raise UnboundedInput(
                f"Content parts of type {kind!r} have no known token bound, so no budget can be reserved for "
                "them; send text or images.",
            )
    return total


def message_tokens(message: Mapping[str, Any], model: str) -> int:
    total = TOKENS_PER_MESSAGE + content_tokens(message.get("content"), model)
    if message.get("name"):
        total += TOKENS_PER_NAME + text_tokens(str(message["name"]), model)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else [calls] if calls is not None else ():
        total += TOKENS_PER_TOOL + _json_tokens(call, model)
    if message.get("function_call") is not None:
        total += TOKENS_PER_TOOL + _json_tokens(message["function_call"], model)
    if message.get("tool_call_id"):
        total += text_tokens(str(message["tool_call_id"]), model)
    return total


def prompt_token_bound(messages: Sequence[Mapping[str, Any]], model: str, *, tools: Sequence[Any] | None = None) -> int:
    """The most input tokens ``model`` can charge for these messages and tool (or function) definitions."""
    total = REPLY_PRIMING
    for message in messages:
        if isinstance(message, Mapping):
            total += message_tokens(message, model)
    for tool in tools if isinstance(tools, list | tuple) else [tools] if tools else ():
        total += TOKENS_PER_TOOL + _json_tokens(tool, model)
    return total


def _json_tokens(value: Any, model: str) -> int:
    """Tokens of any JSON value as text (tool calls and definitions, whatever shape a client sent)."""
    return text_tokens(json.dumps(value, ensure_ascii=False, default=str), model)


def prompt_token_bound_for_models(
    messages: Sequence[Mapping[str, Any]], models: Sequence[str], *, tools: Sequence[Any] | None = None
) -> int:
    """The bound over every model that may answer (a fallback chain): the largest."""
    return max((prompt_token_bound(messages, m, tools=tools) for m in dict.fromkeys(models or [""])), default=0)
