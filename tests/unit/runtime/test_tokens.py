"""Token bounds (agentops.runtime.tokens) and model names (agentops.runtime.model_names): a reservation must
bound the charge for English, Chinese, code and mixed text, and for images by the providers' rules."""

import base64
import io

import pytest
from PIL import Image

from agentops.demo import mock_openai
from agentops.runtime.model_names import base_model_name, output_cap_field, price_names
from agentops.runtime.tokens import UnboundedInput, image_tokens, prompt_token_bound, text_tokens

PROMPTS = {
    "english": "Please summarise the refund policy for the customer and list the next steps clearly.",
    "chinese": "请为客户总结退款政策，并清楚地列出下一步。预算不能超支，每次调用都要正确定价。",
    "code": "def settle(reservation_id: int) -> None:\n    with transaction.atomic():\n        row = Row.objects.get()\n",
    "mixed": "Budget 预算 for agent support-refund: 超支 must never happen ✅ — naïve café résumé 🚀",
}


@pytest.mark.parametrize("kind", sorted(PROMPTS))
@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "gpt-3.5-turbo", "o3-mini", "claude-3-5-sonnet", "llama-3"])
def test_the_prompt_bound_is_never_below_what_a_provider_charges(kind, model):
    messages = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": PROMPTS[kind] * 7}]
    charged = mock_openai.prompt_tokens(messages, model)  # the mock counts like OpenAI's API
    assert prompt_token_bound(messages, model) >= charged


def test_chinese_text_is_counted_by_the_tokenizer_not_by_characters_over_four():
    text = PROMPTS["chinese"] * 20
    assert text_tokens(text, "gpt-4") > len(text) / 4 * 2  # characters / 4 undercounted it by about 4x
    assert text_tokens(text, "unknown-model") == len(text.encode())  # no tokenizer: UTF-8 bytes, an upper bound


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("model", "size", "detail", "expected"),
    [
        ("gpt-4o", (1024, 1024), "high", 85 + 170 * 4),  # OpenAI's example: 768 × 768 → 4 tiles
        ("gpt-4o-2024-08-06", (2048, 4096), "high", 85 + 170 * 6),  # → 1024 × 2048 → 768 × 1536: 2 × 3 tiles
        ("gpt-4o", (4096, 4096), "low", 85),
        ("gpt-4o-mini", (1024, 1024), "auto", 2833 + 5667 * 4),
        ("gpt-4.1-mini", (1024, 1024), "auto", 1659),  # 32 × 32 patches = 1024 × 1.62
        ("claude-3-5-sonnet-20241022", (1000, 1000), "auto", 1334),  # 1000 × 1000 / 750
    ],
)
def test_images_follow_the_providers_documented_rules(model, size, detail, expected):
    part = {"type": "image_url", "image_url": {"url": _png(*size), "detail": detail}}
    assert image_tokens(part, model) == expected


def test_a_linked_image_is_reserved_at_the_rules_worst_case():
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert image_tokens(part, "gpt-4o") == 85 + 170 * 8  # 768 × 2048: the most tiles an image can have


def test_an_image_or_file_without_a_known_bound_is_refused():
    with pytest.raises(UnboundedInput, match="local-llama"):
        image_tokens({"type": "image_url", "image_url": {"url": _png(10, 10)}}, "local-llama")
    with pytest.raises(UnboundedInput, match="file"):
        prompt_token_bound([{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}], "gpt-4o")


@pytest.mark.parametrize(
    ("answered", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4-0613", "gpt-4"),
        ("openai/gpt-4o", "gpt-4o"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "gpt-4o-mini"),
        ("gpt-4-32k", "gpt-4-32k"),
    ],
)
def test_dated_and_prefixed_names_reduce_to_their_family(answered, base):
    assert base_model_name(answered) == base


def test_price_names_go_from_the_most_specific_to_the_family():
    assert price_names("gpt-4-0613", "gpt-4", "gpt-4") == ["gpt-4-0613", "gpt-4"]
    assert price_names("openai/gpt-4o-2024-08-06", "my-alias", "") == [
        "openai/gpt-4o-2024-08-06",
        "my-alias",
        "gpt-4o",
    ]


def test_reasoning_models_take_max_completion_tokens():
    assert output_cap_field("o3-mini-2025-01-31") == "max_completion_tokens"
    assert output_cap_field("gpt-5") == "max_completion_tokens"
    assert output_cap_field("gpt-4o") == "max_tokens"


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "", "name": None, "tool_calls": 1},  # found by the gateway's body fuzz
        {"role": "assistant", "content": None, "function_call": "x", "tool_calls": [1, None, "call"]},
        {"role": "user", "content": [{"type": "image_url", "image_url": 5}, {"type": "text", "text": "hi"}]},
        {"role": "user", "content": {"unexpected": "object"}},
    ],
)
def test_malformed_shapes_are_bounded_not_crashed_on(message):
    # The provider refuses these; the bound must only never fail or undercount on the way there.
    assert prompt_token_bound([message], "gpt-4o", tools=5) > 0
