"""API keys end to end (DESIGN.md §8): created by `manage.py create_api_key` and the admin screen and shown
once, stored only as a hash and compared in constant time, revocable, recorded when used; and the
authentication, rate-limit and request-body errors of /api/v1 with their one error shape, through a real
uvicorn server.

A second server (`tight_web`) runs with a tiny rate-limit burst, a 2 KiB body limit and a 0.2 s key cache,
so the 429, 413 and revocation paths are quick to reach.
"""

from __future__ import annotations

import inspect
import io
import re
import time

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agentops.keys import actions as key_actions
from agentops.keys import tokens as apikeys
from agentops.keys.models import ApiKey
from agentops.runs.models import Agent
from tests.fixtures.stack import start_web

pytestmark = pytest.mark.django_db(transaction=True)

API_PREFIX = "/api/v1"
READ = "/runs"  # GET, scope runs, no body (paths under /api/v1)
WRITE = "/actions"  # POST with a JSON body, scope actions
KEY_RE = re.compile(r"ao_[0-9a-f]{12}_[A-Za-z0-9_-]+")
BURST, RATE, BODY_LIMIT, CACHE = 3, 1.0, 2048, 0.2
BODY = {"operation": "lookup_order", "arguments": {"order": 1}, "confidence": 0.99, "value": 1}


@pytest.fixture(scope="module")
def tight_web(stack_env, logdir):
    proc = start_web(
        {
            **stack_env,
            "API_RATE_BURST": str(BURST),
            "API_RATE_PER_SECOND": str(RATE),
            "MAX_BODY_BYTES": str(BODY_LIMIT),
            "API_KEY_CACHE_SECONDS": str(CACHE),
        },
        logdir,
    )
    yield proc.extra["url"] + API_PREFIX
    proc.stop()


@pytest.fixture
def tight(tight_web, base_url) -> str:
    """/api/v1 of the tight server (``base_url`` from conftest.py: the runtime settings put back)."""
    return tight_web


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], dict | list), body
    return error


# --- creating keys ------------------------------------------------------------------------------------


def test_create_api_key_command_prints_the_key_once_and_creates_the_agent(api):
    assert not Agent.objects.filter(name="cmd-agent").exists()
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "cmd-agent", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert KEY_RE.fullmatch(key), out.getvalue()  # stdout is the key and nothing else
    assert key not in err.getvalue()  # printed once
    row = ApiKey.objects.get(agent__name="cmd-agent")
    assert row.prefix == apikeys.prefix_of(key) and row.prefix in err.getvalue()
    assert row.scopes == sorted(ApiKey.AGENT_SCOPES) and "admin" not in row.scopes
    assert row.created_by == "manage.py" and row.revoked_at is None
    assert api(key).get(READ).status_code == 200

    # a second key for the same agent; explicit scopes; a name
    out = io.StringIO()
    call_command("create_api_key", "cmd-agent", "--scopes", "runs, admin", "--name", "ci", stdout=out, stderr=err)
    second = ApiKey.objects.get(prefix=apikeys.prefix_of(out.getvalue().strip()))
    assert second.scopes == ["admin", "runs"] and second.name == "ci"
    assert Agent.objects.filter(name="cmd-agent").count() == 1 and ApiKey.objects.count() == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["cmd-agent", "--scopes", "runs,bogus"], "bogus"),
        (["cmd-agent", "--scopes", "budgets:write"], "budgets:write"),
        (["not a slug!"], "not a valid agent name"),
    ],
)
def test_create_api_key_command_rejects_bad_input(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("create_api_key", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiKey.objects.exists()


def test_only_a_hash_is_stored_anywhere_in_the_database():
    _, key = key_actions.create_api_key("hash-agent", name="stored-hash")
    # "ao_<prefix>_<secret>": the secret itself may contain "_" (token_urlsafe), so split from the left; a
    # right split once left a 2-character "secret" that matched the stored hash by chance.
    secret = key.split("_", 2)[2]
    row = ApiKey.objects.get()
    assert row.secret_hash == apikeys.hash_key(key) != key and len(row.secret_hash) == 64
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM {quoted} t WHERE strpos(t::text, %s) > 0", [secret[:16]])
            assert cursor.fetchone()[0] == 0, f"the key's secret is stored in {table}"


def test_verify_compares_the_hash_in_constant_time(monkeypatch):
    assert "hmac.compare_digest(" in inspect.getsource(apikeys.lookup)  # verify = lookup of an enabled agent
    _, key = key_actions.create_api_key("ct-agent")
    calls = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    apikeys.forget()
    assert apikeys.verify(key).agent == "ct-agent"
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert apikeys.verify(wrong) is None  # same prefix, different secret
    assert len(calls) == 2 and calls[1] == (apikeys.hash_key(key), apikeys.hash_key(wrong))
    apikeys.forget()


# --- the admin screen ---------------------------------------------------------------------------------


def test_admin_creates_a_key_shown_once_and_revokes_it(tight, root, client):
    client.force_login(root)
    form = client.get("/admin/agentops/apikey/add/")
    assert form.status_code == 200 and b"Create an API key" in form.content

    response = client.post(
        "/admin/agentops/apikey/add/",
        {"agent": "admin-made", "name": "from the admin", "scopes": ["runs", "budgets:read"]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    keys = KEY_RE.findall(page)
    assert len(set(keys)) == 1, page[-3000:]
    key = keys[0]
    row = ApiKey.objects.get(agent__name="admin-made")
    assert row.scopes == ["budgets:read", "runs"] and row.created_by == "root" and row.name == "from the admin"
    assert httpx.get(tight + READ, headers=bearer(key)).status_code == 200

    again = client.get("/admin/agentops/apikey/").content.decode()
    assert row.prefix in again and key not in again  # listed, never shown again
    assert client.get(f"/admin/agentops/apikey/{row.pk}/change/").content.decode().count(key) == 0

    bad = client.post("/admin/agentops/apikey/add/", {"agent": "no spaces please", "scopes": ["runs"]})
    assert bad.status_code == 200 and ApiKey.objects.count() == 1  # the form re-rendered with its error

    response = client.post("/admin/agentops/apikey/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True)
    assert "Revoked 1 key." in response.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is not None
    time.sleep(CACHE + 0.1)
    assert_error(httpx.get(tight + READ, headers=bearer(key)), 401, "unauthenticated")


# --- revocation and use -------------------------------------------------------------------------------


def test_a_revoked_key_answers_401_once_the_key_cache_expires(tight):
    row, key = key_actions.create_api_key("revoke-agent")
    _, other = key_actions.create_api_key("revoke-agent")
    assert httpx.get(tight + READ, headers=bearer(key)).status_code == 200  # now cached by the server
    assert key_actions.revoke_api_key(row.pk) is True
    assert key_actions.revoke_api_key(row.pk) is False  # already revoked
    time.sleep(CACHE + 0.1)
    error = assert_error(httpx.get(tight + READ, headers=bearer(key)), 401, "unauthenticated")
    assert "revoked" in error["message"]
    assert httpx.get(tight + READ, headers=bearer(other)).status_code == 200  # the agent's other key still works


def test_revocation_is_immediate_in_the_revoking_process():
    row, key = key_actions.create_api_key("revoke-local")
    assert apikeys.verify(key) is not None
    key_actions.revoke_api_key(row.pk)
    apikeys.forget(row.prefix)
    assert apikeys.verify(key) is None


def test_cache_seconds_comes_from_settings(settings):
    assert apikeys.CACHE_SECONDS == settings.API_KEY_CACHE_SECONDS


def test_a_disabled_agents_keys_answer_403(tight):
    _, key = key_actions.create_api_key("disabled-agent")
    Agent.objects.filter(name="disabled-agent").update(enabled=False)
    error = assert_error(httpx.get(tight + READ, headers=bearer(key)), 403, "agent_disabled")
    assert error["details"] == {"agent": "disabled-agent"} and "disabled" in error["message"]


def test_last_used_at_is_recorded(make_key, api):
    key = make_key("used-agent")
    row = ApiKey.objects.get(prefix=apikeys.prefix_of(key))
    assert row.last_used_at is None
    assert api(key).get(READ).status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None and row.last_used_at >= row.created_at


# --- authentication errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer  ao_0123456789ab_two-spaces",
        "Basic dXNlcjpwYXNz",
        "Token ao_0123456789ab_secret",
        "Bearer not-a-key",
        "Bearer ao_short_secret",
        "Bearer ao_0123456789ab_",
        "Bearer ao_0123456789ab_unknown-secret-for-an-unknown-prefix",
        "Bearer ao_0123456789ab_x\u00e9",
        "Bearer " + "ao_" + "a" * 5000,
    ],
    ids=lambda value: repr(value)[:30],
)
def test_401_without_a_valid_key_has_the_error_shape_and_www_authenticate(api, authorization):
    client = api(None)
    headers = {} if authorization is None else {"Authorization": authorization.encode()}
    for method, path, kwargs in (("GET", READ, {}), ("POST", WRITE, {"json": BODY})):
        response = client.request(method, path, headers=headers, **kwargs)
        assert_error(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.headers["Content-Type"].startswith("application/json")


def test_a_known_prefix_with_the_wrong_secret_is_401(make_key, api):
    key = make_key("guess-agent")
    prefix = apikeys.prefix_of(key)
    for guess in (f"ao_{prefix}_wrong", key + "x", key[:-1], key.upper()):
        assert_error(api(guess).get(READ), 401, "unauthenticated")
    assert api(key).get(READ).status_code == 200


# --- rate limit ---------------------------------------------------------------------------------------


def test_each_key_is_rate_limited_with_429_and_retry_after(tight):
    _, key = key_actions.create_api_key("busy-agent")
    _, calm = key_actions.create_api_key("calm-agent")
    with httpx.Client(base_url=tight, headers=bearer(key)) as client:
        statuses = [client.get(READ).status_code for _ in range(BURST)]
        assert statuses == [200] * BURST
        for _ in range(3):  # a slow machine may have refilled a token meanwhile (RATE a second)
            response = client.get(READ)
            if response.status_code != 200:
                break
        error = assert_error(response, 429, "rate_limited")
        retry = int(response.headers["Retry-After"])
        assert 1 <= retry <= 2 and error["details"]["retry_after"] == retry
        assert httpx.get(tight + READ, headers=bearer(calm)).status_code == 200  # per key, not global
        assert_error(client.post(WRITE, json=BODY), 429, "rate_limited")  # every endpoint
        time.sleep(retry + 0.05)
        assert client.get(READ).status_code == 200


def test_unauthenticated_requests_do_not_spend_a_keys_tokens(tight):
    _, key = key_actions.create_api_key("bucket-agent")
    prefix = apikeys.prefix_of(key)
    for _ in range(BURST + 2):
        assert httpx.get(tight + READ, headers=bearer(f"ao_{prefix}_wrong")).status_code == 401
    assert httpx.get(tight + READ, headers=bearer(key)).status_code == 200


# --- request bodies -----------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(tight):
    _, key = key_actions.create_api_key("big-agent")
    big = {**BODY, "session_id": "s" * (BODY_LIMIT + 100)}
    response = httpx.post(tight + WRITE, json=big, headers=bearer(key))
    error = assert_error(response, 413, "too_large")
    assert error["details"]["limit"] == BODY_LIMIT
    assert httpx.post(tight + WRITE, json={**BODY, "session_id": "small"}, headers=bearer(key)).status_code == 201


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"{", "application/json"),
        (b"{'model': 'x'}", "application/json"),
        (b"not json at all", "application/json"),
        (b'{"model": "gpt-4o-mini",}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"model=x&operation=y", "application/x-www-form-urlencoded"),
    ],
    ids=["open-brace", "single-quotes", "text", "trailing-comma", "binary", "form"],
)
def test_malformed_json_is_400(make_key, api, body, content_type):
    response = api(make_key("json-agent")).post(WRITE, content=body, headers={"Content-Type": content_type})
    assert_error(response, 400, "malformed")


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"text"',
        b"42",
        b"null",
        b'{"arguments": {}}',
        b'{"operation": 1, "arguments": [], "retry_count": -1}',
        b'{"operation": "x", "confidence": 2}',
    ],
)
def test_json_of_the_wrong_shape_is_422(make_key, api, body):
    response = api(make_key("shape-agent")).post(WRITE, content=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, "invalid")
    assert error["details"]["errors"], error


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("POST", WRITE, {"json": {"operation": "x", "retry_count": "abc"}}),
        ("POST", WRITE, {"json": {"operation": "x", "confidence": "high"}}),
        ("GET", READ, {"params": {"limit": "abc"}}),
        ("GET", READ, {"params": {"offset": "1.5"}}),
    ],
    ids=["int-field", "float-field", "int-query", "float-query"],
)
def test_well_formed_requests_with_unparsable_values_are_422_not_400(make_key, api, method, path, kwargs):
    """Only a body that is not JSON is malformed (400); a value of the wrong type is invalid (422)."""
    response = api(make_key("parse-agent")).request(method, path, **kwargs)
    error = assert_error(response, 422, "invalid")
    assert error["details"]["errors"], error


def test_made_up_keys_do_not_grow_the_verification_cache_without_bound(monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_MAX", 5)
    apikeys.forget()
    _, key = key_actions.create_api_key("cache-agent")
    assert apikeys.verify(key) is not None
    for _ in range(40):
        made_up = f"ao_{apikeys.secrets.token_hex(6)}_made-up"
        assert apikeys.verify(made_up) is None
        assert len(apikeys._cache) <= 5
    assert apikeys.verify(key) is not None  # still verifies (read again if it was dropped)
    apikeys.forget()
