"""The OpenAI-compatible gateway through the real uvicorn server, with the official ``openai`` SDK as the
client (sync and async) and the fault-injecting mock as the upstream: answers, streams, the SDK's own
exception classes for our errors, retries / fallbacks / breakers as in the resilience core, budgets held
and settled (also for a stream the client abandons), the cache, and tool calls passing through."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from agentops.config.models import RuntimeSettings
from agentops.runs.models import Agent
from budgets.models import Budget, BudgetCounter, Reservation, UsageRecord
from review import actions as review
from review.models import Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for
from tests.integration.budgets.conftest import ledger
from tests.integration.gateway.conftest import MOCK_A, MOCK_B, ROUTE, UPSTREAM_ONLY

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def settled(agent: str, count: int) -> Callable[[], list[UsageRecord] | None]:
    """A predicate for wait_for: the agent's ledger rows once there are ``count`` of them (settling may
    finish just after the answer)."""

    def rows() -> list[UsageRecord] | None:
        found = list(UsageRecord.objects.filter(agent=agent).order_by("id"))
        return found if len(found) >= count else None

    rows.describe = lambda: f"{count} ledger rows of {agent}: {UsageRecord.objects.filter(agent=agent).count()}"
    return rows


def no_holds() -> bool:
    """A predicate for wait_for: no reservation is held any more."""
    return not Reservation.objects.filter(status=Reservation.Status.HELD).exists()


no_holds.describe = lambda: f"no holds: {list(Reservation.objects.filter(status='held').values())}"


# --- answers -------------------------------------------------------------------------------------------


def test_a_completion_through_the_default_upstream_is_the_upstreams_answer_with_our_headers(client, mock, make_key):
    sdk = client(make_key("gw-plain"))
    raw = sdk.chat.completions.with_raw_response.create(model=UPSTREAM_ONLY, messages=ASK, max_tokens=50, user="u-7")
    answer = raw.parse()
    assert answer.choices[0].message.content == "Mock answer to: What is the capital of France?"
    assert answer.model == UPSTREAM_ONLY and answer.usage.prompt_tokens > 0 and answer.id.startswith("chatcmpl-mock")
    assert raw.headers["x-agentops-cache"] == "bypass" and raw.headers["x-agentops-handler"] == "primary"
    assert float(raw.headers["x-agentops-overhead-ms"]) >= 0 and raw.headers["x-agentops-request-id"]
    sent = mock.stats()["last_request"]["body"]
    assert sent["max_tokens"] == 50 and sent["user"] == "u-7" and sent["messages"] == ASK
    [row] = wait_for(settled("gw-plain", 1))
    assert (row.model, row.session_id) == (UPSTREAM_ONLY, "u-7")  # no X-Session-Id: the `user` field
    assert (row.input_tokens, row.output_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)


def test_the_session_header_and_operation_header_reach_the_ledger(client, make_key):
    sdk = client(make_key("gw-session"))
    sdk.chat.completions.create(
        model=MOCK_A, messages=ASK, user="ignored", extra_headers={"X-Session-Id": "s-42", "X-Operation": "planning"}
    )
    [row] = wait_for(settled("gw-session", 1))
    assert (row.session_id, row.operation, row.model) == ("s-42", "planning", MOCK_A)


def test_a_session_budget_spent_by_one_agent_leaves_another_agents_session_of_the_same_id_alone(
    gateway, client, make_key
):
    """Session budgets count per (agent, session): agent A's exhausted "s1" refuses A (OpenAI's quota error
    naming the budget) and still admits agent B's calls with X-Session-Id "s1"."""
    from budgets.actions import budgets as budget_actions

    budget_actions.save_budget(Budget(name="gw-per-session", scope="session", limit_tokens=1000, timezone="UTC"))
    key_a, key_b = make_key("gw-session-a"), make_key("gw-session-b")
    spent = httpx.post(
        gateway.removesuffix("/v1") + "/api/v1/usage",
        headers={"Authorization": f"Bearer {key_a}"},
        json={"model": MOCK_A, "operation": "response", "input_tokens": 1000, "output_tokens": 0, "session_id": "s1"},
        timeout=10,
    )
    assert spent.status_code == 201, spent.text
    in_s1 = {"X-Session-Id": "s1"}
    with pytest.raises(openai.RateLimitError) as refused:
        client(key_a).chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50, extra_headers=in_s1)
    assert "gw-per-session" in refused.value.message
    answer = client(key_b).chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50, extra_headers=in_s1)
    assert answer.choices[0].message.content
    [row] = wait_for(settled("gw-session-b", 1))
    assert row.session_id == "s1"
    counters = {c.subject: c.spent_tokens for c in BudgetCounter.objects.filter(budget__name="gw-per-session")}
    assert counters == {"gw-session-a/s1": 1000, "gw-session-b/s1": row.total_tokens}


def test_models_lists_routes_and_served_models(client):
    ids = {model.id for model in client().models.list().data}
    assert {ROUTE, MOCK_A, MOCK_B, "gpt-4o", "gpt-4o-mini", "planning"} <= ids
    assert client().models.retrieve(MOCK_A).id == MOCK_A
    with pytest.raises(openai.NotFoundError):
        client().models.retrieve("no-such-model")


def test_a_route_name_as_model_runs_the_routes_chain(client, mock):
    raw = client().chat.completions.with_raw_response.create(model=ROUTE, messages=ASK)
    assert raw.parse().model == MOCK_A and raw.headers["x-agentops-handler"] == "primary"


def test_extra_fields_pass_to_the_upstream_unchanged(client, mock):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    client().chat.completions.create(
        model=MOCK_A, messages=ASK, tools=tools, tool_choice="auto", seed=3, stop=["\n\n"],
        response_format={"type": "text"}, max_completion_tokens=77,
    )  # fmt: skip
    sent = mock.stats()["last_request"]["body"]
    assert sent["tools"] == tools and sent["tool_choice"] == "auto" and sent["seed"] == 3 and sent["stop"] == ["\n\n"]
    assert sent["response_format"] == {"type": "text"}
    assert sent["max_completion_tokens"] == 77 and "max_tokens" not in sent


# --- errors as the SDK knows them ----------------------------------------------------------------------


def test_errors_raise_the_sdks_own_exception_classes(gateway_web, gateway, client, make_key, mock):
    with pytest.raises(openai.AuthenticationError) as bad_key:
        openai.OpenAI(base_url=gateway, api_key="ao_nothere_x", max_retries=0).chat.completions.create(
            model=MOCK_A, messages=ASK
        )
    assert bad_key.value.code == "invalid_api_key"
    # the refusal leaves a log line (an operator finds an agent's 401s), which never repeats the key
    refused = wait_for(
        lambda: [
            line
            for line in gateway_web.tail(200_000).splitlines()
            if '"gateway.refused"' in line and bad_key.value.request_id in line
        ],
        timeout=5,
        message="the gateway's log line for the refused key",
    )
    assert '"status": 401' in refused[0] and '"code": "invalid_api_key"' in refused[0]
    assert "ao_nothere_x" not in refused[0]
    with pytest.raises(openai.PermissionDeniedError):
        client(make_key("gw-noscope", scopes=["runs"])).chat.completions.create(model=MOCK_A, messages=ASK)

    mock.script(UPSTREAM_ONLY, ["404"])  # the upstream does not know the model
    with pytest.raises(openai.NotFoundError) as missing:
        client().chat.completions.create(model=UPSTREAM_ONLY, messages=ASK)
    assert missing.value.code == "model_not_found"

    for bad, param in [
        ({"messages": []}, "messages"),
        ({"messages": ASK, "temperature": 3}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.[0].role"),
        ({"messages": ASK, "max_tokens": 0}, "max_tokens"),
        ({"messages": ASK, "n": 2}, "n"),
    ]:
        with pytest.raises(openai.BadRequestError) as error:
            client().chat.completions.create(model=MOCK_A, **bad)
        assert error.value.param == param, (bad, error.value.body)
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0  # nothing invalid went upstream


def test_malformed_bodies_and_wrong_methods_get_openai_shaped_4xx(gateway, make_key):
    headers = {"Authorization": f"Bearer {make_key()}"}
    with httpx.Client(base_url=gateway, headers=headers) as http:
        for response, status in [
            (http.post("/chat/completions", content=b"{not json"), 400),
            (http.post("/chat/completions", content=b"[1, 2]"), 400),
            (http.post("/chat/completions", json={"model": 7, "messages": ASK}), 400),
            (http.get("/chat/completions"), 405),
            (http.post("/completions", json={}), 404),
            (http.post("/chat/completions", content=b"x" * 1_100_000), 413),
        ]:
            assert response.status_code == status, response.text
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_spent_budget_answers_openais_quota_error_naming_the_budget(client, make_key, mock):
    from budgets.actions import budgets as budget_actions

    budget_actions.save_budget(
        Budget(name="gw-tiny", scope="agent", scope_key="gw-poor", limit_tokens=10, timezone="UTC")
    )
    sdk = client(make_key("gw-poor"), max_retries=2)  # the SDK would retry a 429, but we say x-should-retry: false
    with pytest.raises(openai.RateLimitError) as quota:
        sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    assert quota.value.code == "insufficient_quota" and quota.value.type == "insufficient_quota"
    assert "gw-tiny" in quota.value.message
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0


# --- resilience as in the core -------------------------------------------------------------------------


def test_transient_upstream_errors_are_retried(client, mock):
    mock.script(MOCK_A, ["503", "429:0"])
    raw = client().chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK)
    assert raw.parse().model == MOCK_A and raw.headers["x-agentops-handler"] == "primary"
    assert mock.stats()["by_model"][MOCK_A] == 3


def test_a_failing_primary_falls_back_then_its_breaker_opens(client, mock):
    mock.rates(MOCK_A, {"503": 1.0})
    for _ in range(3):
        raw = client().chat.completions.with_raw_response.create(model=ROUTE, messages=ASK)
        assert raw.parse().model == MOCK_B and raw.headers["x-agentops-handler"] == "backup"
    tried = mock.stats()["by_model"][MOCK_A]
    raw = client().chat.completions.with_raw_response.create(model=ROUTE, messages=ASK)
    assert raw.parse().model == MOCK_B
    assert mock.stats()["by_model"][MOCK_A] == tried  # open breaker: the primary was skipped


def test_an_open_breaker_with_no_fallback_answers_503_with_retry_after(client, mock):
    mock.rates(UPSTREAM_ONLY, {"500": 1.0})
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client().chat.completions.create(model=UPSTREAM_ONLY, messages=ASK)
    with pytest.raises(openai.InternalServerError) as error:
        client().chat.completions.create(model=UPSTREAM_ONLY, messages=ASK)
    assert error.value.status_code == 503 and error.value.code == "breaker_open"
    assert int(error.value.response.headers["retry-after"]) >= 1


# --- streaming -----------------------------------------------------------------------------------------


def test_a_stream_passes_the_upstreams_chunks_and_settles_from_its_usage(client, make_key, mock):
    sdk = client(make_key("gw-stream"))
    chunks = list(
        sdk.chat.completions.create(
            model=UPSTREAM_ONLY, messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock answer to: What is the capital of France?"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    [row] = wait_for(settled("gw-stream", 1))
    assert (row.input_tokens, row.output_tokens) == (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)
    assert mock.stats()["last_request"]["body"]["stream_options"] == {"include_usage": True}

    plain = list(sdk.chat.completions.create(model=UPSTREAM_ONLY, messages=ASK, stream=True))
    assert all(c.choices for c in plain) and plain[-1].choices[0].finish_reason == "stop"
    wait_for(settled("gw-stream", 2))


def test_a_stream_from_the_simulated_provider_is_shaped_like_openais(client):
    chunks = list(client().chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True,
                                                    stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Simulated answer")
    assert chunks[-1].usage.total_tokens > 0


def test_a_client_that_disconnects_mid_stream_releases_the_rest_of_its_reservation(client, make_key, mock):
    from budgets.actions import budgets as budget_actions

    budget = budget_actions.save_budget(Budget(name="gw-stream-cap", limit_tokens=100_000, timezone="UTC"))
    mock.script(UPSTREAM_ONLY, ["slow_body:4000"])
    stream = client(make_key("gw-leaver")).chat.completions.create(
        model=UPSTREAM_ONLY, messages=ASK, stream=True, max_tokens=2000, extra_body={"mock_words": 200}
    )
    next(iter(stream))
    counter = BudgetCounter.objects.get(budget=budget)
    assert counter.reserved_tokens >= 2000  # the whole max_tokens is held while the stream flows
    stream.close()
    wait_for(no_holds)
    counter.refresh_from_db()
    [row] = wait_for(settled("gw-leaver", 1))
    assert counter.reserved_tokens == 0 and counter.spent_tokens == row.input_tokens + row.output_tokens
    assert row.output_tokens < 2000


@pytest.mark.slow
def test_two_hundred_concurrent_calls_never_overspend_one_cap(gateway, make_key, mock):
    from budgets.actions import budgets as budget_actions

    cap = 3000
    budget = budget_actions.save_budget(Budget(name="gw-cap", limit_tokens=cap, timezone="UTC"))
    key = make_key("gw-crowd", max_in_flight=200)  # the budget is under test here, not the fair share

    async def crowd() -> list[int]:
        sdk = openai.AsyncOpenAI(base_url=gateway, api_key=key, max_retries=0, timeout=60)

        async def one(index: int) -> int:
            try:
                if index % 2:
                    async for _ in await sdk.chat.completions.create(
                        model=UPSTREAM_ONLY, messages=ASK, max_tokens=30, stream=True
                    ):
                        pass
                else:
                    await sdk.chat.completions.create(model=UPSTREAM_ONLY, messages=ASK, max_tokens=30)
                return 200
            except openai.RateLimitError as exc:
                assert exc.code == "insufficient_quota"
                return 429

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            await sdk.close()

    statuses = asyncio.run(crowd())
    wait_for(no_holds)
    counter = BudgetCounter.objects.get(budget=budget)
    spent = ledger(agent="gw-crowd")
    assert statuses.count(200) == spent["rows"] and statuses.count(429) == 200 - spent["rows"]
    assert spent["rows"] > 10 and statuses.count(429) > 0  # the cap was reached, and it admitted what fit
    assert counter.spent_tokens == spent["tokens"] <= cap and counter.reserved_tokens == 0


# --- cache ---------------------------------------------------------------------------------------------


def test_a_repeated_deterministic_request_is_answered_from_the_cache(client, make_key, mock):
    sdk = client(make_key("gw-cache"))
    first = sdk.chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK, temperature=0)
    again = sdk.chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK, temperature=0)
    assert (first.headers["x-agentops-cache"], again.headers["x-agentops-cache"]) == ("miss", "hit")
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert mock.stats()["by_model"][MOCK_A] == 1
    assert again.parse().usage.total_tokens == 0  # nothing was paid for the hit
    # another agent's identical request is not answered from this agent's cache
    other = client(make_key("gw-cache-2")).chat.completions.with_raw_response.create(
        model=MOCK_A, messages=ASK, temperature=0
    )
    assert other.headers["x-agentops-cache"] == "miss"

    tools = [{"type": "function", "function": {"name": "lookup"}}]
    for kwargs in ({"temperature": 0.7}, {"temperature": 0, "tools": tools}, {}):
        for _ in range(2):
            raw = sdk.chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK, **kwargs)
            assert raw.headers["x-agentops-cache"] == "bypass", kwargs

    RuntimeSettings.objects.update(gateway_cache="always")
    from agentops.config.source import bump_version

    bump_version()
    time.sleep(1.2)  # processes probe the config version at most once a second
    sdk.chat.completions.create(model=MOCK_A, messages=ASK, temperature=0.7)
    hit = sdk.chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK, temperature=0.7)
    assert hit.headers["x-agentops-cache"] == "hit"


# --- tool calls ----------------------------------------------------------------------------------------

CALL = {"name": "lookup_weather", "arguments": {"city": "Paris"}}
RISKY = {"name": "delete_account", "arguments": {"account": "acme", "hard": True}}
TOOLS = [{"type": "function", "function": {"name": c["name"]}} for c in (CALL, RISKY)]


def test_tool_calls_pass_through_unchanged(client, make_key, mock):
    sdk = client(make_key("gw-tools"))
    answer = sdk.chat.completions.create(
        model=MOCK_A, messages=ASK, tools=TOOLS, extra_body={"mock_tool_calls": [CALL]}
    )
    [call] = answer.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("lookup_weather", {"city": "Paris"})
    assert answer.choices[0].finish_reason == "tool_calls"
    chunks = list(sdk.chat.completions.create(model=MOCK_A, messages=ASK, tools=TOOLS, stream=True,
                                              extra_body={"mock_tool_calls": [CALL]}))  # fmt: skip
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks
                        if c.choices and c.choices[0].delta.tool_calls)  # fmt: skip
    assert json.loads(arguments) == {"city": "Paris"}


def _decide_when_pending(decision: str, **kwargs) -> None:
    """In the test process, while the gateway holds the answer: wait for the escalation, then alice (the
    cast's reviewer) decides it."""
    pending = Escalation.objects.filter(operation=RISKY["name"], state="pending")
    escalation = wait_for(pending.first, timeout=15, interval=0.05, message="the escalation")
    review.claim(escalation.pk, ALICE.user())
    review.decide(escalation.pk, ALICE.user(), decision, **kwargs)


def test_a_sensitive_tool_call_is_held_until_a_reviewer_modifies_it(client, make_key, mock):
    import threading

    key = make_key("gw-hold")
    Agent.objects.filter(name="gw-hold").update(gateway_tool_review="hold")
    reviewer = threading.Thread(target=_decide_when_pending, args=("modified",),
                                kwargs={"arguments": {"account": "acme", "hard": False}, "comment": "soft only"})  # fmt: skip
    reviewer.start()
    answer = client(key).chat.completions.create(
        model=MOCK_A, messages=ASK, tools=TOOLS, extra_body={"mock_tool_calls": [CALL, RISKY]}, timeout=30
    )
    reviewer.join()
    calls = {c.function.name: json.loads(c.function.arguments) for c in answer.choices[0].message.tool_calls}
    assert calls == {"lookup_weather": {"city": "Paris"}, "delete_account": {"account": "acme", "hard": False}}


def test_a_rejected_tool_call_is_removed_from_a_held_stream(client, make_key, mock):
    import threading

    key = make_key("gw-hold-stream")
    Agent.objects.filter(name="gw-hold-stream").update(gateway_tool_review="hold")
    reviewer = threading.Thread(target=_decide_when_pending, args=("rejected",), kwargs={"comment": "never"})
    reviewer.start()
    chunks = list(client(key).chat.completions.create(model=MOCK_A, messages=ASK, tools=TOOLS, stream=True,
                                                      extra_body={"mock_tool_calls": [RISKY]}, timeout=30))  # fmt: skip
    reviewer.join()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert "`delete_account` was rejected by a reviewer: never" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_annotate_answers_at_once_and_names_the_escalation(client, make_key, mock):
    key = make_key("gw-annotate")
    Agent.objects.filter(name="gw-annotate").update(gateway_tool_review="annotate")
    raw = client(key).chat.completions.with_raw_response.create(
        model=MOCK_A, messages=ASK, tools=TOOLS, extra_body={"mock_tool_calls": [RISKY]}
    )
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "delete_account"
    escalation = raw.headers["x-agentops-escalations"]
    assert raw.headers["x-agentops-review-url"] == f"/review/{escalation}/"


# --- async client --------------------------------------------------------------------------------------


def test_the_async_sdk_works_the_same(async_client, make_key):
    async def main():
        sdk = async_client(make_key("gw-async"))
        try:
            answer = await sdk.chat.completions.create(model=MOCK_A, messages=ASK)
            pieces = [c async for c in await sdk.chat.completions.create(model=MOCK_A, messages=ASK, stream=True)]
            with pytest.raises(openai.BadRequestError):
                await sdk.chat.completions.create(model=MOCK_A, messages=[])
            return answer, pieces
        finally:
            await sdk.close()

    answer, pieces = asyncio.run(main())
    assert answer.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    wait_for(settled("gw-async", 2))


# --- nothing an agent sends yields a 5xx ---------------------------------------------------------------


def test_generated_bodies_never_get_a_5xx(gateway, make_key, mock):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = (
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
    )
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=10,
    )  # fmt: skip
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | values},
        optional={"content": st.text(max_size=30) | values, "tool_calls": values, "name": values},
    )
    valid_messages = st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=30)}),
        min_size=1,
        max_size=3,
    )
    body = st.fixed_dictionaries(
        {
            "model": st.sampled_from([MOCK_A, ROUTE, "gpt-4o-mini", UPSTREAM_ONLY]) | values,
            "messages": valid_messages | st.lists(message, max_size=3) | values,
        },
        optional={
            "max_tokens": st.integers(-5, 5000) | values,
            "temperature": st.floats(-1, 3) | values,
            "stream": st.booleans() | values,
            "stream_options": values,
            "tools": values,
            "n": st.integers(0, 3) | values,
            "user": values,
        },
    )
    seen: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {make_key('gw-fuzz')}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway, headers=headers, timeout=30) as http:

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(body)
        def check(payload):
            response = http.post("/chat/completions", content=json.dumps(payload).encode())
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (payload, response.text[:300])
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
    print("gateway fuzz: status counts", seen)
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0, seen


# --- the error-rate alert counts every LLM call ------------------------------------------------------------


def test_the_error_rate_alert_counts_gateway_calls_and_reported_usage(gateway, client, mock, make_key, redis_client):
    """The gateway's answered and failed calls (counted by the guard in the web process) and a call an agent
    reports on /api/v1/usage land in the shared counts the error-rate alert reads; 2 failed of 4 is 50 %."""
    from budgets.actions import alerts as alert_actions
    from budgets.actions import call_counts
    from budgets.models import Alert, AlertSettings

    AlertSettings.objects.update_or_create(pk=1, defaults={"error_rate_pct": 10, "error_rate_min_calls": 4})
    Alert.objects.filter(kind="error_rate").delete()
    time.sleep(call_counts.FLUSH_INTERVAL + 0.2)  # earlier tests' counts are in Redis by now: drop them
    keys = list(redis_client.scan_iter(f"{call_counts.KEY_PREFIX}*"))
    if keys:
        redis_client.delete(*keys)
    before = call_counts.window(300)
    key = make_key("gw-error-rate")
    sdk = client(key)
    sdk.chat.completions.create(model=UPSTREAM_ONLY, messages=ASK)
    mock.script(UPSTREAM_ONLY, ["401", "401"])  # a permanent error: no retry, no fallback for this model
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            sdk.chat.completions.create(model=UPSTREAM_ONLY, messages=ASK)
    reported = httpx.post(
        gateway.removesuffix("/v1") + "/api/v1/usage",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "operation": "own-call", "input_tokens": 10, "output_tokens": 5},
    )
    assert reported.status_code == 201, reported.text

    def counted():
        total, failed = call_counts.window(300)
        delta = (total - before[0], failed - before[1])
        return delta if delta[0] >= 4 else None

    counted.describe = lambda: f"counts since the test began: {call_counts.window(300)} - {before}"
    assert wait_for(counted) == (4, 2)
    alert_actions.evaluate_alerts()
    assert Alert.objects.filter(kind="error_rate").exists()
