"""The gateway's doors through the real uvicorn server: input it cannot take is a 400 in OpenAI's shape
(never a 5xx or a retried 503), bad keys are refused on the event loop, each key has a cap on requests in
flight, and a stream whose client leaves ends its request task and settles its reservation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from agentops.keys import actions as key_actions
from agentops.lib import inflight
from budgets.models import Budget, Reservation
from tests.fixtures.stack import Proc
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, UPSTREAM_ONLY, start_gateway_web

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "What is the capital of France?"}]
THREADS = 8  # this module's web process has few gateway threads, so a test can keep them all busy
SLOW_STREAM = {"model": UPSTREAM_ONLY, "messages": ASK, "stream": True, "max_tokens": 500, "mock_words": 200}


@pytest.fixture(scope="module")
def gateway_web(stack_env, logdir, mock_openai) -> Iterator[Proc]:
    """The conftest's gateway process, with THREADS gateway threads."""
    proc = start_gateway_web(stack_env, logdir, mock_openai, GATEWAY_THREADS=str(THREADS))
    yield proc
    proc.stop()


def live_requests(gateway: str) -> float:
    """The gateway's live request tasks, from its own gauge on /metrics."""
    text = httpx.get(gateway.removesuffix("/v1") + "/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("agentops_gateway_requests_in")]
    assert values, "no agentops_gateway_requests_in_flight on /metrics"
    return sum(values)


def open_streams(http: httpx.Client, count: int) -> list[tuple[httpx.Response, Iterator[bytes]]]:
    """``count`` streamed answers, each read up to its first chunk and left open (the iterator is kept:
    dropping it would close the connection)."""
    streams = []
    for _ in range(count):
        response = http.send(http.build_request("POST", "/chat/completions", json=SLOW_STREAM), stream=True)
        assert response.status_code == 200, response.read()[:300]
        chunks = response.iter_bytes()
        next(chunks)
        streams.append((response, chunks))
    return streams


def openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


# --- no 5xx from input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MOCK_A, "messages": ASK, "user": "a\x00b"}, "user"),
        ({"model": MOCK_A, "messages": [{"role": "user", "content": "hi\x00"}]}, "messages[0].content"),
        ({"model": MOCK_A, "messages": ASK, "metadata": {"k\x00": "v"}}, "metadata"),
    ],
)
def test_a_nul_character_is_a_400_naming_the_parameter(gateway, make_key, mock, body, param):
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {make_key()}"}) as http:
        error = openai_error(http.post("/chat/completions", json=body), 400)
    assert error["param"] == param, error
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0  # nothing went upstream


def test_the_sdk_gets_a_bad_request_not_a_retried_503_for_a_nul_user(client):
    with pytest.raises(openai.BadRequestError) as error:
        client().chat.completions.create(model=MOCK_A, messages=ASK, user="\x00")
    assert error.value.param == "user"


def test_a_lone_surrogate_is_a_400(gateway, make_key):
    raw = json.dumps({"model": MOCK_A, "messages": [{"role": "user", "content": "\ud83d"}]})
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {make_key()}"}) as http:
        response = http.post("/chat/completions", content=raw.encode(), headers={"content-type": "application/json"})
    assert openai_error(response, 400)["param"] == "messages[0].content"


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_ten_thousand_deep_is_a_400(gateway, make_key, opener):
    closer = "]" if opener == "[" else "}"
    raw = f'{{"model": "{MOCK_A}", "messages": {opener * 10_000 + "1" + closer * 10_000}}}'
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {make_key()}"}) as http:
        response = http.post("/chat/completions", content=raw.encode())
    assert "deep" in openai_error(response, 400)["message"]


def test_generated_unstorable_text_in_any_field_never_gets_a_5xx(gateway, make_key, mock):
    """The fuzz test of test_gateway.py, aimed: valid requests with NUL or a lone surrogate put in one field."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    bad_text = st.builds(
        lambda head, bad, tail: head + bad + tail, st.text(max_size=5), st.sampled_from(["\x00", "\ud800"]),
        st.text(max_size=5),
    )  # fmt: skip
    field = st.sampled_from(["user", "content", "model", "tool_name", "extra_key", "extra_value"])
    headers = {"Authorization": f"Bearer {make_key('gw-fuzz-nul')}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway, headers=headers, timeout=30) as http:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(field, bad_text)
        def check(where, text):
            body = {"model": MOCK_A, "messages": [{"role": "user", "content": "hello"}]}
            if where == "content":
                body["messages"][0]["content"] = text
            elif where == "model":
                body["model"] = text
            elif where == "tool_name":
                body["tools"] = [{"type": "function", "function": {"name": text}}]
            elif where == "extra_key":
                body["metadata"] = {text: "v"}
            else:
                body[where if where == "user" else "metadata"] = text if where == "user" else {"k": text}
            raw = json.dumps(body).encode()  # ensure_ascii: NUL and surrogates travel as \\u escapes
            openai_error(http.post("/chat/completions", content=raw), 400)

        check()


# --- fair shares ---------------------------------------------------------------------------------------


def test_two_hundred_aborted_streams_end_their_request_tasks_and_settle_every_reservation(gateway, mock):
    from budgets.actions import budgets as budget_actions

    budget_actions.save_budget(Budget(name="gw-abort-cap", limit_tokens=100_000_000, timezone="UTC"))
    row, key = key_actions.create_api_key("gw-aborter", max_in_flight=1000)  # aborted ones count until they end
    mock.script(UPSTREAM_ONLY, ["slow_body:4000"] * 200)

    async def one(http: httpx.AsyncClient, gate: asyncio.Semaphore) -> None:
        async with gate, http.stream("POST", "/chat/completions", json=SLOW_STREAM) as response:
            assert response.status_code == 200, await response.aread()
            async for _ in response.aiter_bytes():
                break  # leaving the block closes the connection mid-stream

    async def main() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as http:
            gate = asyncio.Semaphore(THREADS)
            await asyncio.gather(*(one(http, gate) for _ in range(200)))

    asyncio.run(main())
    wait_for(lambda: live_requests(gateway) == 0, timeout=30, message="every gateway request task to end")
    wait_for(lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), timeout=30)
    statuses = set(Reservation.objects.values_list("status", flat=True))
    assert Reservation.objects.count() >= 200 and statuses <= {"settled", "released"}, statuses
    assert inflight.in_flight(row.pk) == 0


def test_a_key_over_its_in_flight_cap_gets_429_with_retry_after_until_one_ends(gateway, client, mock):
    row, key = key_actions.create_api_key("gw-capped", max_in_flight=2)
    mock.script(UPSTREAM_ONLY, ["slow_body:10000"] * 2)
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        streams = open_streams(http, 2)
        assert inflight.in_flight(row.pk) == 2  # counted in Redis: every web process sees the same slots
        over = http.post("/chat/completions", json={"model": MOCK_A, "messages": ASK})
        error = openai_error(over, 429)
        assert error["code"] == "too_many_requests_in_flight" and over.headers["retry-after"] == "1", error
        with pytest.raises(openai.RateLimitError):
            client(key).chat.completions.create(model=MOCK_A, messages=ASK)
        for response, _ in streams:
            response.close()
    wait_for(lambda: inflight.in_flight(row.pk) == 0, timeout=15, message="the slots to be released")
    assert client(key).chat.completions.create(model=MOCK_A, messages=ASK).choices[0].message.content


def test_a_bad_key_is_refused_without_waiting_for_a_gateway_thread(gateway, make_key, mock):
    row, revoked = key_actions.create_api_key("gw-revoked")
    key_actions.revoke_api_key(row.pk)
    with httpx.Client(base_url=gateway, timeout=30) as http:
        first = http.post("/chat/completions", json={"model": MOCK_A, "messages": ASK}, headers={
            "Authorization": f"Bearer {revoked}"
        })  # fmt: skip
        assert openai_error(first, 401)["code"] == "invalid_api_key"  # found bad on a thread, now remembered
        _, busy = key_actions.create_api_key("gw-busy", max_in_flight=THREADS)
        mock.script(UPSTREAM_ONLY, ["slow_body:4000"] * THREADS)
        http.headers["Authorization"] = f"Bearer {busy}"
        streams = open_streams(http, THREADS)  # every gateway thread is now streaming
        try:
            for bad in (revoked, "ao_not-a-key", "sk-something-else"):
                began = time.monotonic()
                response = http.post("/chat/completions", json={"model": MOCK_A, "messages": ASK}, headers={
                    "Authorization": f"Bearer {bad}"
                })  # fmt: skip
                assert openai_error(response, 401)["code"] == "invalid_api_key"
                assert time.monotonic() - began < 1.0, (bad, time.monotonic() - began)
                models = http.get("/models", headers={"Authorization": f"Bearer {bad}"})
                assert openai_error(models, 401)["code"] == "invalid_api_key"
        finally:
            for response, _ in streams:
                response.close()


def test_max_in_flight_is_set_from_the_command_line(transactional_db):
    from io import StringIO

    from django.core.management import CommandError, call_command

    from agentops.keys.models import ApiKey

    call_command("create_api_key", "gw-cli", "--max-in-flight", "3", stdout=StringIO(), stderr=StringIO())
    assert ApiKey.objects.get(agent__name="gw-cli").max_in_flight == 3
    with pytest.raises(CommandError):
        call_command("create_api_key", "gw-cli", "--max-in-flight", "0", stdout=StringIO(), stderr=StringIO())


def test_max_in_flight_is_the_one_field_an_admin_can_change_on_a_key(transactional_db, root):
    from django.test import Client

    from agentops.keys.models import ApiKey

    row, _ = key_actions.create_api_key("gw-admin-edit", name="first")
    browser = Client()
    browser.force_login(root)
    page = f"/admin/agentops/apikey/{row.pk}/change/"
    response = browser.post(page, {"max_in_flight": "40", "name": "renamed", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert row.max_in_flight == 40 and row.name == "first"  # the name is read-only
    assert browser.post(page, {"max_in_flight": "0", "_save": "Save"}).status_code == 200  # refused, shown again
    assert ApiKey.objects.get(pk=row.pk).max_in_flight == 40
