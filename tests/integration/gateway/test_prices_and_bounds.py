"""Money is right through the gateway, with the official openai SDK over real HTTP to the mock, which answers
like the real API (dated model names, OpenAI's tokenizer, reasoning models refusing ``max_tokens``):

- a dated or prefixed answer is priced by the most specific price row (its family's), and the ledger row
  names the row that applied;
- the reservation is an upper bound of the charge, in tokens and dollars, for English, Chinese, code and mixed
  prompts, on a model with a tokenizer and on one without;
- the cap reserved is the cap sent, by the name the model accepts; an image without a known bound is a 400.
"""

from __future__ import annotations

import base64
import io
import json
from decimal import Decimal

import openai
import pytest
from PIL import Image

from budgets.actions import budgets as budget_actions
from budgets.actions import directory
from budgets.models import Budget, ModelPrice, Reservation, UsageRecord
from budgets.seed import seed_price_table
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.test_gateway import no_holds, settled

pytestmark = pytest.mark.django_db(transaction=True)

PROMPTS = {
    "english": "Please summarise the refund policy for the customer and list the next steps clearly. " * 8,
    "chinese": "请为客户总结退款政策，并清楚地列出下一步。预算不能超支，每次调用都要正确定价。" * 8,
    "code": "def settle(reservation_id: int) -> None:\n    with transaction.atomic():\n        pass\n" * 8,
    "mixed": "Budget 预算 for agent support-refund: 超支 must never happen ✅ — naïve café 🚀 " * 8,
}


@pytest.fixture
def price_table(gateway):
    from django.apps import apps

    seed_price_table(apps.get_model)
    directory.directory_changed()


@pytest.fixture
def lifetime_budget(gateway):
    budget = budget_actions.save_budget(
        Budget(name="all spend", scope="global", period="lifetime", limit_tokens=10_000_000)
    )
    directory.directory_changed()
    return budget


def _cost(row: UsageRecord, price: ModelPrice) -> Decimal:
    return ((row.input_tokens * price.input_per_1k + row.output_tokens * price.output_per_1k) / 1000).quantize(
        Decimal("0.00000001")
    )


@pytest.mark.parametrize(
    ("requested", "answered", "family"),
    [
        ("gpt-4", "gpt-4-0613", "gpt-4"),  # 30× under before: priced by the catch-all row
        ("gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("openai/gpt-4o", "openai/gpt-4o", "gpt-4o"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ],
)
def test_a_dated_or_prefixed_answer_is_priced_by_its_familys_row(
    client, make_key, price_table, lifetime_budget, requested, answered, family
):
    agent = f"price-{family}"
    answer = client(make_key(agent)).chat.completions.create(
        model=requested, messages=[{"role": "user", "content": "Quote the price."}], max_tokens=40
    )
    assert answer.model == answered  # the mock answers like the real API
    [row] = wait_for(settled(agent, 1))
    price = ModelPrice.objects.filter(model=family).order_by("-effective_from").first()
    assert row.model == answered and row.price_id == price.pk  # the ledger names the row that applied
    assert row.cost_usd == _cost(row, price) > 0
    assert row.input_tokens == answer.usage.prompt_tokens and row.output_tokens == answer.usage.completion_tokens


def test_the_costs_screen_shows_which_price_row_applied(client, make_key, price_table, root):
    from django.test import Client

    client(make_key("price-screen")).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hello"}], max_tokens=10
    )
    wait_for(settled("price-screen", 1))
    browser = Client()
    browser.force_login(root)
    calls = browser.get("/costs/data.json").json()["recent_calls"]
    [call] = [c for c in calls if c["agent"] == "price-screen"]
    assert call["model"] == "gpt-4-0613" and call["priced_as"].startswith("gpt-4 from 2023-03-14")


@pytest.mark.parametrize("kind", sorted(PROMPTS))
@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o", "local-llama"])
def test_the_reservation_bounds_the_charge_for_every_kind_of_text(
    client, make_key, price_table, lifetime_budget, kind, model
):
    agent = f"bound-{kind}-{model}"
    # No max_tokens: the gateway reserves its default cap and must send that cap; the answer runs long.
    answer = client(make_key(agent)).chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Answer at length."}, {"role": "user", "content": PROMPTS[kind]}],
        extra_body={"mock_words": 3000},
    )
    [row] = wait_for(settled(agent, 1))
    held = Reservation.objects.get(pk=row.reservation_id)
    charged = row.input_tokens + row.output_tokens
    assert answer.usage.total_tokens == charged and held.tokens >= charged, (held.tokens, charged)
    assert held.usd >= row.cost_usd
    wait_for(no_holds)


def test_the_reserved_cap_is_sent_by_the_name_a_reasoning_model_accepts(client, make_key, mock, price_table):
    sdk = client(make_key("cap-o3"))
    answer = sdk.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "think"}], max_tokens=30, extra_body={"mock_words": 500}
    )
    sent = mock.stats()["last_request"]["body"]
    assert "max_tokens" not in sent and sent["max_completion_tokens"] == 30
    assert answer.model == "o3-mini-2025-01-31" and answer.usage.completion_tokens == 30
    sdk.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "again"}])
    sent = mock.stats()["last_request"]["body"]
    assert "max_tokens" not in sent and sent["max_completion_tokens"] > 0  # the default cap, reserved and sent


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_images_are_reserved_by_the_providers_rule_or_refused(client, make_key, price_table, lifetime_budget):
    sdk = client(make_key("image-agent"))
    linked = {"type": "image_url", "image_url": {"url": "https://example.com/receipt.png"}}
    message = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, linked]}
    sdk.chat.completions.create(model="gpt-4o", messages=[message], max_tokens=20)
    [row] = wait_for(settled("image-agent", 1))
    assert Reservation.objects.get(pk=row.reservation_id).tokens >= 85 + 170 * 8 + 20  # the tile rule's worst case
    inline = {"type": "image_url", "image_url": {"url": _png(2000, 500)}}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="local-llama", messages=[{"role": "user", "content": [inline]}])
    error = refused.value.body
    assert refused.value.status_code == 400 and "local-llama" in error["message"] and "image" in error["message"]
    assert error["code"] == "unsupported_content"
    assert not UsageRecord.objects.filter(model="local-llama").exists()
    assert json.dumps(error)  # the provider's error shape, parsed by the SDK
