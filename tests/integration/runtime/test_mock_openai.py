"""The fault-injecting OpenAI mock, driven over real HTTP by the official openai SDK.

Also the record of what the SDK raises for each fault (TESTING.md): the error classifier relies on it.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from agentops.demo.mock_openai import count_tokens

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2+2?"}]


def ask(client, model="gpt-4o-mini", fault=None, **kwargs):
    headers = {"X-Mock-Fault": fault} if fault else None
    return client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=headers, **kwargs)


def test_plain_completion_has_openai_shape_and_usage(mock):
    r = ask(mock.client())
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini-2024-07-18"  # like the real API: the dated snapshot that answered
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Mock answer to: What is 2+2?"
    assert choice.finish_reason == "stop"
    # OpenAI's tokenizer: the contents + 3 per message + 3 for the prompt, the answer's tokens
    assert r.usage.prompt_tokens == 3 + (count_tokens("be brief") + 3) + (count_tokens("What is 2+2?") + 3)
    assert r.usage.completion_tokens == count_tokens("Mock answer to: What is 2+2?")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_length_knobs(mock):
    client = mock.client()
    long = ask(client, extra_body={"mock_words": 120}).choices[0].message.content
    assert len(long.split()) == 120
    assert long.startswith("Mock answer to: What is 2+2? lorem ipsum")
    assert ask(client, extra_body={"mock_words": 2}).choices[0].message.content == "Mock answer"
    assert ask(client, extra_body={"mock_content": "exactly this"}).choices[0].message.content == "exactly this"
    cut = ask(client, extra_body={"mock_words": 100}, max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    assert count_tokens(cut.choices[0].message.content) == 5


def test_streaming_with_include_usage(mock):
    client = mock.client()
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}, extra_body={"mock_words": 30}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ask(client, extra_body={"mock_words": 30}).choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == count_tokens(text)
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(ask(client, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_models_endpoint(mock):
    ids = [m.id for m in mock.client().models.list()]
    assert "gpt-4o-mini" in ids and "mock-large" in ids


def test_429_is_rate_limit_error_with_retry_after(mock):
    with pytest.raises(openai.RateLimitError) as info:
        ask(mock.client(), fault="429:2")
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as info:
        ask(mock.client(), fault="429")
    assert "retry-after" not in info.value.response.headers


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
        ("401", openai.AuthenticationError),
        ("400", openai.BadRequestError),
        ("404", openai.NotFoundError),
    ],
)
def test_status_faults_map_to_sdk_errors(mock, fault, error):
    with pytest.raises(error) as info:
        ask(mock.client(), fault=fault)
    assert info.value.status_code == int(fault)
    assert info.value.body["type"]  # OpenAI error body: {"error": {"message", "type", "param", "code"}}


def test_reset_is_a_connection_error_not_a_timeout(mock):
    t0 = time.perf_counter()
    with pytest.raises(openai.APIConnectionError) as info:
        ask(mock.client(), fault="reset")
    assert not isinstance(info.value, openai.APITimeoutError)
    # The TCP RST. This SDK version runs on httpx2 (a fork of httpx), so the cause is httpx2.ReadError.
    cause = info.value.__cause__
    assert type(cause).__name__ == "ReadError" and "reset" in str(cause).lower()
    assert time.perf_counter() - t0 < 1.0


def test_cut_body_is_a_connection_error(mock):
    with pytest.raises(openai.APIConnectionError):
        ask(mock.client(), fault="cut")
    with pytest.raises(openai.APIConnectionError):
        list(ask(mock.client(), fault="cut", stream=True))


def test_hang_is_a_timeout(mock):
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        ask(mock.client(timeout=0.3), fault="hang")
    assert 0.3 <= time.perf_counter() - t0 < 1.5
    assert ask(mock.client()).choices[0].message.content  # the server is fine afterwards


def test_malformed_json_is_a_plain_json_decode_error(mock):
    # Not an openai exception at all: the SDK parses the 200 body with json.loads and lets the error through.
    with pytest.raises(json.JSONDecodeError) as info:
        ask(mock.client(), fault="malformed")
    assert not isinstance(info.value, openai.OpenAIError)
    with pytest.raises(json.JSONDecodeError):
        list(ask(mock.client(), fault="malformed", stream=True))


def test_delay_and_slow_body(mock):
    t0 = time.perf_counter()
    assert ask(mock.client(), fault="delay:200").choices[0].message.content
    assert time.perf_counter() - t0 >= 0.2
    # The SDK timeout is per read (httpx), so a body trickled in pieces 60 ms apart passes a 0.3 s timeout
    # even though the whole response takes 0.6 s: only our own deadline can cut a slow body.
    t0 = time.perf_counter()
    assert ask(mock.client(timeout=0.3), fault="slow_body:600").choices[0].message.content
    assert time.perf_counter() - t0 >= 0.5
    chunks = list(ask(mock.client(), fault="slow_body:200", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Mock answer")


def test_empty_and_refusal_are_successful_responses(mock):
    empty = ask(mock.client(), fault="empty")
    assert empty.choices[0].message.content == ""
    assert empty.usage.completion_tokens == 0
    refusal = ask(mock.client(), fault="refusal")
    assert refusal.choices[0].message.content == "I'm sorry, but I can't help with that."


def test_scripts_are_fifo_per_model_with_a_wildcard(mock):
    mock.script("gpt-4o", ["500", "ok"])
    mock.script("*", ["401"])
    client = mock.client()
    with pytest.raises(openai.InternalServerError):
        ask(client, model="gpt-4o")
    assert ask(client, model="gpt-4o").choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        ask(client, model="gpt-4o")  # own queue empty: the * queue applies
    assert ask(client, model="gpt-4o").choices[0].message.content  # everything consumed
    mock.script("gpt-4o", ["503"])
    assert ask(client, model="gpt-4o", fault="ok").choices[0].message.content  # header wins, script kept
    with pytest.raises(openai.InternalServerError):
        ask(client, model="gpt-4o")
    stats = mock.stats()
    assert stats["by_model"] == {"gpt-4o": 6}
    assert stats["faults"] == {"500": 1, "ok": 3, "401": 1, "503": 1}
    assert stats["pending_scripts"] == {}


def test_unknown_faults_are_refused(mock):
    with pytest.raises(httpx.HTTPStatusError):
        mock.script("m", ["explode"])
    with pytest.raises(httpx.HTTPStatusError):
        mock.rates("m", {"500": 0.8, "503": 0.5})


def test_rates_are_deterministic_with_a_seed(mock):
    raw = httpx.Client(base_url=mock.base_url)

    def sequence() -> list[int]:
        body = {"model": "sim", "messages": MESSAGES}
        return [raw.post("/chat/completions", json=body).status_code for _ in range(40)]

    mock.rates("sim", {"500": 0.3, "429:1": 0.2}, seed=7)
    first = sequence()
    mock.reset()
    mock.rates("sim", {"429:1": 0.2, "500": 0.3}, seed=7)  # same rates in another order: same sequence
    assert sequence() == first
    assert {200, 429, 500} == set(first)
    mock.rates("sim", {"500": 0.3, "429:1": 0.2}, seed=8)
    assert sequence() != first
    mock.rates("*", {"503": 1.0})
    assert raw.post("/chat/completions", json={"model": "other", "messages": MESSAGES}).status_code == 503
    raw.close()


def test_stats_show_the_last_request(mock):
    client = mock.client(default_headers={"X-Trace": "abc"})
    ask(client, temperature=0.5)
    last = mock.stats()["last_request"]
    assert last["path"] == "/v1/chat/completions"
    assert last["headers"]["x-trace"] == "abc"
    assert last["headers"]["authorization"] == "Bearer x"
    assert last["body"]["temperature"] == 0.5
    history = mock.stats()["history"]
    assert [h["fault"] for h in history] == ["ok"] and history[0]["retry_count"] == "0"


async def test_async_client_streams(mock):
    client = mock.async_client()
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage.total_tokens > 0
    await client.close()


def test_a_plain_call_is_fast(mock):
    raw = httpx.Client(base_url=mock.base_url)
    body = {"model": "m", "messages": MESSAGES}
    raw.post("/chat/completions", json=body)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        raw.post("/chat/completions", json=body)
    per_call = (time.perf_counter() - t0) / n
    raw.close()
    assert per_call < 0.005, f"{per_call * 1000:.2f} ms per call"


def test_reasoning_models_refuse_max_tokens_like_the_real_api(mock):
    client = mock.client()
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, model="o3-mini", max_tokens=50)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "max_tokens"
    answer = ask(client, model="o3-mini", max_completion_tokens=50)
    assert answer.model == "o3-mini-2025-01-31" and answer.usage.completion_tokens <= 50
