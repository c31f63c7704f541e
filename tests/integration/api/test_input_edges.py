"""Input that PostgreSQL or Python cannot take, over HTTP on the live server: NUL characters and lone
surrogates anywhere in a body (keys of free-form objects too) and JSON nested thousands deep. Each is a 4xx
in the one error shape naming where it was, never a 5xx and never a row."""

from __future__ import annotations

import httpx
import pytest

from review.models import ActionRequest
from tests.integration.api.test_actions_api import error_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(make_key, api) -> httpx.Client:
    return api(make_key("t-edges", scopes=["actions", "runs"]))


def post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"operation": "delete_record", "context": {"extra": "a\\u0000b"}}', "context.extra"),
        ('{"operation": "delete_record", "context": {"ke\\u0000y": "v"}}', "context"),
        ('{"operation": "delete_record", "context": {"extra": ["ok", {"deep": "\\u0000"}]}}', "context.extra[1].deep"),
        ('{"operation": "delete_record", "context": {"extra": "\\ud800"}}', "context.extra"),
        ('{"operation": "x", "arguments": {"\\udfff": 1}}', "arguments"),
    ],
)
def test_unstorable_text_anywhere_in_an_action_is_422_naming_the_field(client, body, where):
    error = error_of(post_raw(client, "/actions", body), 422, "invalid")
    assert where in error["message"], error
    assert error["details"]["errors"][0]["loc"][0] == "body", error
    assert ActionRequest.objects.count() == 0


@pytest.mark.parametrize("path", ["/actions", "/runs"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_ten_thousand_deep_is_a_400(client, path, opener):
    closer = "]" if opener == "[" else "}"
    body = opener * 10_000 + "1" + closer * 10_000
    error = error_of(post_raw(client, path, body), 400, "malformed")
    assert "deep" in error["message"], error


def test_nesting_within_the_limit_still_works(client):
    nested: dict = {"leaf": "ok"}
    for _ in range(30):
        nested = {"n": nested}
    response = client.post("/actions", json={"operation": "lookup", "arguments": nested, "confidence": 0.99})
    assert response.status_code == 201, response.text
