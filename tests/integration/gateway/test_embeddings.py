"""``POST /v1/embeddings`` through the real uvicorn server, with the unmodified ``openai`` SDK as the client
and the fault-injecting mock as the upstream (it answers like OpenAI: deterministic unit vectors, dated
names, usage counted with OpenAI's tokenizer): single and batched inputs, base64 and float, ``dimensions``,
the ledger row and its price, the exact cache, the breaker and the fallback to the route's backup model, a
budget that blocks, the reservation holding exactly the input tokens, keys that see only their own agent,
and bad bodies answered with OpenAI's 400s (never a 5xx)."""

from __future__ import annotations

import base64
import json
import math
import struct
from decimal import Decimal

import httpx
import openai
import pytest
from django.apps import apps

from agentops.demo.mock_usage import count_tokens
from agentops.runtime.providers.simulated import simulated_embedding
from budgets.actions import budgets as budget_actions
from budgets.actions import directory
from budgets.models import Budget, BudgetCounter, ModelPrice, UsageRecord
from budgets.seed import seed_price_table
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, MOCK_B, ROUTE
from tests.integration.gateway.test_gateway import no_holds, settled

pytestmark = pytest.mark.django_db(transaction=True)

SMALL, LARGE, ADA = "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"
TEXT = "The refund policy allows returns within 30 days."


@pytest.fixture
def prices(gateway):
    """The seed's price table, embedding models included (a transactional test's flush removed it)."""
    seed_price_table(apps.get_model)
    directory.directory_changed()


def price_of(model: str) -> ModelPrice:
    return ModelPrice.objects.filter(model=model).order_by("-effective_from").first()


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_one_input_answers_openais_shape_with_the_mocks_vector_our_headers_and_a_priced_ledger_row(
    client, make_key, mock, prices
):
    raw = client(make_key("emb-one")).embeddings.with_raw_response.create(model=SMALL, input=TEXT)
    answer = raw.parse()  # the SDK asked for base64 and decoded it to floats
    assert mock.stats()["last_request"]["body"] == {"model": SMALL, "input": TEXT, "encoding_format": "base64"}
    assert answer.object == "list" and answer.model == SMALL and len(answer.data) == 1
    [item] = answer.data
    assert (item.object, item.index) == ("embedding", 0)
    assert item.embedding == simulated_embedding(SMALL, TEXT) and len(item.embedding) == 1536
    assert abs(norm(item.embedding) - 1.0) < 1e-6
    tokens = count_tokens(TEXT, SMALL)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (tokens, tokens)

    headers = raw.headers
    assert headers["x-agentops-cache"] == "miss" and headers["x-agentops-handler"] == "primary"
    assert headers["x-agentops-model"] == SMALL and headers["x-agentops-request-id"]
    assert float(headers["x-agentops-overhead-ms"]) >= 0
    [row] = wait_for(settled("emb-one", 1))
    price = price_of(SMALL)
    assert price.input_per_1k == Decimal("0.00002") and str(price.effective_from.date()) == "2024-01-25"
    assert (row.model, row.operation, row.input_tokens, row.output_tokens) == (SMALL, "embeddings", tokens, 0)
    assert row.price_id == price.id and not row.cached
    assert row.cost_usd == (Decimal(tokens) * price.input_per_1k / 1000).quantize(Decimal("0.00000001"))
    assert Decimal(headers["x-agentops-cost-usd"]) == row.cost_usd


def test_a_batch_of_strings_and_token_lists_in_float_and_base64(client, make_key, mock, prices):
    sdk = client(make_key("emb-batch"))
    inputs = ["first text", "second, longer text about refunds", "三つ目"]
    floats = sdk.embeddings.create(model=SMALL, input=inputs, encoding_format="float")
    assert [item.index for item in floats.data] == [0, 1, 2]
    assert [item.embedding for item in floats.data] == [simulated_embedding(SMALL, text) for text in inputs]
    assert floats.usage.prompt_tokens == sum(count_tokens(text, SMALL) for text in inputs)

    encoded = sdk.embeddings.create(model=SMALL, input=inputs, encoding_format="base64")  # the SDK leaves it as sent
    for item, expected in zip(encoded.data, floats.data, strict=True):
        raw = base64.b64decode(item.embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == expected.embedding  # little-endian float32

    ids = [[791, 21639, 4947], [15339, 1917]]
    by_ids = sdk.embeddings.create(model=SMALL, input=ids)
    assert [item.embedding for item in by_ids.data] == [simulated_embedding(SMALL, one) for one in ids]
    assert by_ids.usage.prompt_tokens == 5
    one_list = sdk.embeddings.create(model=SMALL, input=ids[0])
    assert len(one_list.data) == 1 and one_list.usage.prompt_tokens == 3
    rows = wait_for(settled("emb-batch", 4))
    # settles run after each answer is sent, so their order is not the calls' order
    assert sorted(row.input_tokens for row in rows) == sorted([floats.usage.prompt_tokens] * 2 + [5, 3])


def test_dimensions_are_honoured_where_openai_allows_them_and_refused_where_it_does_not(client, make_key, mock, prices):
    sdk = client(make_key("emb-dims"))
    short = sdk.embeddings.create(model=LARGE, input=TEXT, dimensions=256)
    assert len(short.data[0].embedding) == 256 and abs(norm(short.data[0].embedding) - 1.0) < 1e-6
    assert short.data[0].embedding == simulated_embedding(LARGE, TEXT, 256)
    assert len(sdk.embeddings.create(model=LARGE, input=TEXT).data[0].embedding) == 3072

    for model, dimensions in [(ADA, 256), (SMALL, 2000)]:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.embeddings.create(model=model, input=TEXT, dimensions=dimensions)
        assert refused.value.param == "dimensions", refused.value.body
    assert ADA not in mock.stats()["by_model"]  # refused before anything went upstream
    wait_for(settled("emb-dims", 2))
    assert UsageRecord.objects.filter(agent="emb-dims").count() == 2


def test_a_dated_answer_is_priced_by_its_familys_row(client, make_key, prices):
    raw = client(make_key("emb-ada")).embeddings.with_raw_response.create(model=ADA, input=TEXT)
    assert raw.parse().model == "text-embedding-ada-002-v2"  # as OpenAI answers
    [row] = wait_for(settled("emb-ada", 1))
    price = price_of(ADA)
    assert price.input_per_1k == Decimal("0.0001") and str(price.effective_from.date()) == "2023-06-13"
    assert row.model == "text-embedding-ada-002-v2" and row.price_id == price.id
    assert row.cost_usd == (Decimal(row.input_tokens) * price.input_per_1k / 1000).quantize(Decimal("0.00000001"))
    assert Decimal(raw.headers["x-agentops-cost-usd"]) == row.cost_usd


def test_the_same_request_is_answered_from_the_agents_own_cache_at_no_cost(client, make_key, mock, prices):
    sdk = client(make_key("emb-cache"))
    first = sdk.embeddings.with_raw_response.create(model=SMALL, input=["a", "b"], dimensions=64)
    again = sdk.embeddings.with_raw_response.create(model=SMALL, input=["a", "b"], dimensions=64)
    assert (first.headers["x-agentops-cache"], again.headers["x-agentops-cache"]) == ("miss", "hit")
    assert again.headers["x-agentops-handler"] == "cache" and again.headers["x-agentops-cost-usd"] == "0"
    assert [d.embedding for d in again.parse().data] == [d.embedding for d in first.parse().data]
    assert mock.stats()["by_model"][SMALL] == 1
    rows = wait_for(settled("emb-cache", 2))  # the settles run after the answers: in either order
    [paid], [hit] = [row for row in rows if not row.cached], [row for row in rows if row.cached]
    assert paid.input_tokens > 0 and paid.cost_usd > 0 and (hit.input_tokens, hit.cost_usd) == (0, Decimal(0))

    # Another input, dimensions or encoding is another answer; another agent never reads this agent's cache.
    for kwargs in ({"input": ["a", "c"], "dimensions": 64}, {"input": ["a", "b"], "dimensions": 32},
                   {"input": ["a", "b"], "dimensions": 64, "encoding_format": "float"}):  # fmt: skip
        assert sdk.embeddings.with_raw_response.create(model=SMALL, **kwargs).headers["x-agentops-cache"] == "miss"
    other = client(make_key("emb-cache-2")).embeddings.with_raw_response.create(
        model=SMALL, input=["a", "b"], dimensions=64
    )
    assert other.headers["x-agentops-cache"] == "miss"
    assert mock.stats()["by_model"][SMALL] == 5
    wait_for(settled("emb-cache-2", 1))
    assert UsageRecord.objects.filter(agent="emb-cache").count() == 5  # nobody else's call is on its ledger


def test_a_failing_primary_falls_back_to_the_routes_backup_then_its_breaker_opens(client, make_key, mock):
    mock.rates(MOCK_A, {"503": 1.0})
    sdk = client(make_key("emb-fallback"))
    for number in range(3):  # each a new input: a repeat would be answered by the cache
        raw = sdk.embeddings.with_raw_response.create(model=ROUTE, input=f"{TEXT} {number}")
        assert raw.parse().model == MOCK_B and raw.headers["x-agentops-handler"] == "backup"
        assert raw.parse().data[0].embedding == simulated_embedding(MOCK_B, f"{TEXT} {number}")
    tried = mock.stats()["by_model"][MOCK_A]
    assert tried >= 3
    raw = sdk.embeddings.with_raw_response.create(model=ROUTE, input="another text")
    assert raw.parse().model == MOCK_B and raw.headers["x-agentops-handler"] == "backup"
    assert mock.stats()["by_model"][MOCK_A] == tried  # open breaker: the primary was skipped
    rows = wait_for(settled("emb-fallback", 4))
    assert {row.model for row in rows} == {MOCK_B}


def test_a_malformed_or_empty_upstream_answer_is_retried(client, make_key, mock):
    mock.script(MOCK_A, ["malformed", "empty"])
    answer = client(make_key("emb-retry")).embeddings.create(model=MOCK_A, input=["x", "y"])
    assert [d.embedding for d in answer.data] == [simulated_embedding(MOCK_A, "x"), simulated_embedding(MOCK_A, "y")]
    assert mock.stats()["by_model"][MOCK_A] == 3


def test_a_budget_holds_exactly_the_input_tokens_and_blocks_what_does_not_fit(client, make_key, mock, prices):
    tokens = count_tokens(TEXT, SMALL)
    budget = budget_actions.save_budget(
        Budget(name="emb-cap", scope="agent", scope_key="emb-poor", limit_tokens=tokens, timezone="UTC")
    )
    directory.directory_changed()
    sdk = client(make_key("emb-poor"), max_retries=2)
    assert sdk.embeddings.create(model=SMALL, input=TEXT).usage.prompt_tokens == tokens  # fits exactly
    wait_for(no_holds)
    counter = BudgetCounter.objects.get(budget=budget)
    assert (counter.spent_tokens, counter.reserved_tokens) == (tokens, 0)

    with pytest.raises(openai.RateLimitError) as quota:
        sdk.embeddings.create(model=SMALL, input="one more")
    assert quota.value.code == "insufficient_quota" and "emb-cap" in quota.value.message
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert mock.stats()["by_model"][SMALL] == 1  # the refused call never went upstream
    assert UsageRecord.objects.filter(agent="emb-poor").count() == 1


def test_keys_are_checked_like_chat_completions(gateway, client, make_key):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway, api_key="ao_nothere_x", max_retries=0).embeddings.create(
            model=SMALL, input=TEXT
        )
    with pytest.raises(openai.PermissionDeniedError):
        client(make_key("emb-noscope", scopes=["runs"])).embeddings.create(model=SMALL, input=TEXT)
    missing = httpx.get(f"{gateway}/embeddings/emb-1", headers={"Authorization": f"Bearer {make_key()}"})
    assert missing.status_code == 404  # embeddings are answered, never stored: there is nothing to read back
    assert not UsageRecord.objects.filter(agent="emb-noscope").exists()


BAD_BODIES = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (json.dumps({"input": TEXT}).encode(), "model"),
    (json.dumps({"model": SMALL}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": ""}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": []}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": ["x"] * 2049}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": "nul \u0000 byte"}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": [[["nested"]]]}).encode(), "input[0]"),
    (json.dumps({"model": SMALL, "input": ["ok", 5]}).encode(), "input[1]"),
    (json.dumps({"model": SMALL, "input": ["ok", ""]}).encode(), "input[1]"),
    (json.dumps({"model": SMALL, "input": [1, -2]}).encode(), "input[0]"),
    (json.dumps({"model": SMALL, "input": [True, False]}).encode(), "input[0]"),
    (json.dumps({"model": SMALL, "input": {"text": "x"}}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": list(range(9000))}).encode(), "input"),
    (json.dumps({"model": SMALL, "input": ["word " * 9000]}).encode(), "input[0]"),
    (json.dumps({"model": SMALL, "input": TEXT, "encoding_format": "int8"}).encode(), "encoding_format"),
    (json.dumps({"model": SMALL, "input": TEXT, "dimensions": 0}).encode(), "dimensions"),
    (json.dumps({"model": SMALL, "input": TEXT, "dimensions": "64"}).encode(), "dimensions"),
    (json.dumps({"model": SMALL, "input": TEXT, "user": 5}).encode(), "user"),
    (b'{"model": "' + SMALL.encode() + b'", "input": ' + b"[" * 200 + b"]" * 200 + b"}", None),
]


def test_bad_bodies_get_openais_400_and_nothing_goes_upstream(gateway, make_key, mock):
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {make_key('emb-bad')}"}) as http:
        for body, param in BAD_BODIES:
            response = http.post("/embeddings", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (body[:80], response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
            if param is not None:
                assert error["param"] == param, (body[:80], error)
        assert http.get("/embeddings").status_code == 405
        assert http.post("/embeddings", content=b"x" * 1_100_000).status_code == 413
    assert mock.stats()["requests"] == 0
    assert not UsageRecord.objects.filter(agent="emb-bad").exists()
