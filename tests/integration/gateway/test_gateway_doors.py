"""The gateway's doors through the real uvicorn server: input it cannot take is a 400 in OpenAI's shape
(never a 5xx or a retried 503), bad keys are refused on the event loop, each key has a cap on requests in
flight, and a stream whose client leaves ends its request task and settles its reservation."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "What is the capital of France?"}]


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
