"""The semantic cache through the real gateway with the official ``openai`` SDK and the mock upstream: a
paraphrase is answered with the cached answer (``X-Agentops-Cache: semantic-hit``, no upstream call, no
tokens charged); look-alike questions, another agent, another system prompt, tools and a route without the
opt-in never are; a route naming an embeddings model compares the upstream's vectors (budgeted, metered)."""

from __future__ import annotations

import pytest

from agentops.config.models import ModelRoute
from agentops.config.source import bump_version
from budgets.models import UsageRecord
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, ROUTE

pytestmark = pytest.mark.django_db(transaction=True)


def ask(text: str, system: str = "You answer customer questions briefly.") -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


@pytest.fixture
def semantic(gateway):
    """ROUTE with its semantic cache on (offline embedder, the default threshold)."""
    ModelRoute.objects.filter(operation=ROUTE).update(semantic_cache=True, semantic_threshold=0.92)
    bump_version()  # the gateway re-reads its config on the next call (RUNTIME_CONFIG_CHECK_SECONDS=0)
    return gateway


def upstream_calls(mock) -> int:
    return mock.stats()["by_model"].get(MOCK_A, 0)


def test_a_paraphrase_hits_and_look_alikes_and_other_partitions_do_not(semantic, client, make_key, mock):
    sdk = client(make_key("sem-a"))

    def create(text, **kwargs):
        kwargs.setdefault("messages", ask(text))
        return sdk.chat.completions.with_raw_response.create(model=ROUTE, temperature=0, max_tokens=60, **kwargs)

    first = create("How do I reset my password for order 1234?")
    assert first.headers["x-agentops-cache"] == "miss"
    calls = upstream_calls(mock)

    again = create("how can I reset my password for order 1234")
    assert again.headers["x-agentops-cache"] == "semantic-hit"
    assert float(again.headers["x-agentops-similarity"]) >= 0.92
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert again.parse().usage.total_tokens == 0 and upstream_calls(mock) == calls  # no upstream, no tokens

    look_alikes = [
        "How do I reset my password for order 1235?",  # another number
        "How do I not reset my password for order 1234?",  # a negation
        "How do I reset my Paris password for order 1234?",  # an entity the cached one does not name
    ]
    for text in look_alikes:
        assert create(text).headers["x-agentops-cache"] == "miss", text
    other_agent = client(make_key("sem-b")).chat.completions.with_raw_response.create(
        model=ROUTE, temperature=0, max_tokens=60, messages=ask("how can I reset my password for order 1234")
    )
    other_system = create("", messages=ask("how can I reset my password for order 1234", system="Be verbose."))
    tools = [{"type": "function", "function": {"name": "reset_password"}}]
    with_tools = create("", messages=ask("how can I reset my password for order 1234"), tools=tools)
    plain_model = sdk.chat.completions.with_raw_response.create(  # not the route: no opt-in
        model=MOCK_A, temperature=0, max_tokens=60, messages=ask("how can I reset my password for order 1234")
    )
    assert [r.headers["x-agentops-cache"] for r in (other_agent, other_system, with_tools, plain_model)] == [
        "miss",
        "miss",
        "bypass",  # tools: the exact cache refuses (deterministic mode), so the semantic cache never looks
        "miss",
    ]
    assert upstream_calls(mock) == calls + len(look_alikes) + 4


def test_a_route_naming_an_embeddings_model_compares_the_upstreams_vectors(semantic, client, make_key, mock):
    ModelRoute.objects.filter(operation=ROUTE).update(semantic_embeddings_model="text-embedding-3-small")
    bump_version()
    sdk = client(make_key("sem-emb"))
    first = sdk.chat.completions.create(model=ROUTE, temperature=0, messages=ask("Please refund my order 77"))
    raw = sdk.chat.completions.with_raw_response.create(  # synonyms: the mock's vectors put them together
        model=ROUTE, temperature=0, messages=ask("please reimburse my purchase 77")
    )
    assert raw.headers["x-agentops-cache"] == "semantic-hit"
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    rows = wait_for(lambda: list(UsageRecord.objects.filter(agent="sem-emb", operation="semantic_cache")) or None)
    assert rows[0].model.startswith("text-embedding-3-small") and rows[0].input_tokens > 0


def test_a_paraphrase_hits_on_the_responses_api_too(semantic, client, make_key, mock):
    """/v1/responses carries its client's body along (for a provider that speaks Responses); the partition is
    the conversation's, so a paraphrase there hits like on chat completions, and a look-alike does not."""
    sdk = client(make_key("sem-r"))

    def create(text):
        return sdk.responses.with_raw_response.create(
            model=ROUTE, temperature=0, max_output_tokens=60, instructions="Answer briefly.", input=text
        )

    first = create("How do I reset my password for order 1234?")
    calls = upstream_calls(mock)
    again = create("how can I reset my password for order 1234")
    assert first.headers["x-agentops-cache"] == "miss" and again.headers["x-agentops-cache"] == "semantic-hit"
    assert again.parse().output_text == first.parse().output_text and upstream_calls(mock) == calls
    assert again.parse().id != first.parse().id  # a response of its own, stored for a follow-up
    assert create("How do I reset my password for order 1235?").headers["x-agentops-cache"] == "miss"
