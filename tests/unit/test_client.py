"""The Python client's transport logic (agentops/client.py) against an in-process fake (httpx.MockTransport):
retries on 429/503 honouring Retry-After (capped), jittered backoff otherwise, which requests a connection
error may resend, Idempotency-Key on POST /runs, and the mapping of error answers to exceptions. The
endpoints themselves, long-polls and the approval decorator are tested end to end against the real server in
tests/integration/api/test_client_e2e.py."""

from __future__ import annotations

import email.utils
import inspect
import json
import time

import httpx
import pytest

from agentops import client as c

RUN = {"id": 7, "agent": "a", "status": "queued", "session_id": "", "input": {}, "output": None, "error": ""}


def error(status: int, code: str, message: str = "no", details=None, headers=None) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return httpx.Response(status, json=body, headers=headers or {})


class Fake:
    """Answers requests from a script (responses or exceptions), recording every request."""

    def __init__(self, *script):
        self.script, self.requests = list(script), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def make(fake: Fake, **options) -> tuple[c.AgentOps, list[float]]:
    slept: list[float] = []
    ops = c.AgentOps("http://agentops.test", "ao_key", transport=httpx.MockTransport(fake), **options)
    ops._sleep = slept.append
    return ops, slept


def test_base_url_auth_and_typed_answer():
    fake = Fake(httpx.Response(200, json=RUN))
    ops, _ = make(fake)
    run = ops.get_run(7, wait=5)
    assert isinstance(run, c.Run) and run.id == 7 and run.status == "queued" and not run.finished
    request = fake.requests[0]
    assert request.url.path == "/api/v1/runs/7" and request.url.params["wait"] == "5"
    assert request.headers["authorization"] == "Bearer ao_key"
    # a long-poll's read timeout is longer than its wait
    assert request.extensions["timeout"]["read"] >= 15
    assert c.AgentOps("http://x/api/v1/", "k").base_url == "http://x/api/v1"


def test_429_honours_retry_after_then_succeeds():
    fake = Fake(error(429, "rate_limited", headers={"Retry-After": "2"}), httpx.Response(200, json=RUN))
    ops, slept = make(fake)
    assert ops.get_run(7).id == 7
    assert len(fake.requests) == 2 and len(slept) == 1 and 2 <= slept[0] <= 2.1


def test_retry_after_is_capped_and_accepts_an_http_date():
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    fake = Fake(
        error(503, "budget_unavailable", headers={"Retry-After": "9999"}),
        error(503, "budget_unavailable", headers={"Retry-After": later}),
        httpx.Response(200, json={"items": []}),
    )
    ops, slept = make(fake, max_retry_after=5)
    assert ops.budgets() == []
    assert len(slept) == 2 and all(5 <= s <= 5.1 for s in slept)
    assert 59 <= c._retry_after_seconds(email.utils.formatdate(time.time() + 60, usegmt=True)) <= 60
    assert c._retry_after_seconds("garbage") is None and c._retry_after_seconds("-3") == 0


def test_backoff_without_retry_after_is_jittered_and_grows():
    fake = Fake(error(503, "unavailable"))
    ops, slept = make(fake, max_retries=4, backoff_base=1, backoff_max=4)
    with pytest.raises(c.Unavailable) as raised:
        ops.budgets()
    assert raised.value.status == 503 and raised.value.code == "unavailable"
    assert len(fake.requests) == 5 and len(slept) == 4
    for attempt, delay in enumerate(slept, start=1):
        ceiling = min(4, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    # jitter: many draws are not all the same
    assert len({round(ops._delay(3, None), 6) for _ in range(20)}) > 1


def test_rate_limited_after_the_retries_are_used_up():
    fake = Fake(error(429, "rate_limited", "slow down", {"retry_after": 1}, {"Retry-After": "1"}))
    ops, slept = make(fake, max_retries=2)
    with pytest.raises(c.RateLimited) as raised:
        ops.request_action("send_x", {"a": 1})
    assert len(fake.requests) == 3 and len(slept) == 2
    assert raised.value.status == 429 and raised.value.retry_after == 1 and raised.value.details == {"retry_after": 1}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "malformed", c.InvalidRequest),
        (401, "unauthenticated", c.Unauthenticated),
        (402, "budget_exceeded", c.BudgetExceeded),
        (403, "forbidden", c.Forbidden),
        (404, "not_found", c.NotFound),
        (409, "conflict", c.Conflict),
        (413, "too_large", c.InvalidRequest),
        (422, "invalid", c.InvalidRequest),
        (500, "internal", c.ApiError),
    ],
)
def test_error_answers_map_to_exceptions_without_retrying(status, code, cls):
    details = {"budget": "team", "cheaper_model": "gpt-4o-mini"}
    fake = Fake(error(status, code, "the message", details))
    ops, slept = make(fake)
    with pytest.raises(cls) as raised:
        ops.reserve("gpt-4o", "chat", 100, 100)
    err = raised.value
    assert isinstance(err, c.ApiError) and type(err) is cls
    assert (err.status, err.code, err.message, err.details) == (status, code, "the message", details)
    assert len(fake.requests) == 1 and slept == []


def test_an_answer_that_is_not_our_error_shape_still_raises_api_error():
    fake = Fake(httpx.Response(502, text="<html>bad gateway</html>"))
    ops, _ = make(fake)
    with pytest.raises(c.ApiError) as raised:
        ops.list_runs()
    err = raised.value
    assert err.status == 502 and err.code == "http_502" and err.message == "Bad Gateway"
    assert "bad gateway" in err.details["body"]


def test_connection_errors_are_retried_for_idempotent_requests_only():
    fake = Fake(httpx.ReadError("reset"), httpx.Response(200, json=RUN))
    ops, slept = make(fake)
    assert ops.get_run(7).id == 7 and len(slept) == 1

    # POST /actions is not idempotent: an answer lost after sending must not ask twice
    fake = Fake(httpx.ReadError("reset"), httpx.Response(201, json={"id": 1, "status": "approved"}))
    ops, slept = make(fake)
    with pytest.raises(httpx.ReadError):
        ops.request_action("send_x")
    assert len(fake.requests) == 1 and slept == []

    # ...but a connection that was never made sent nothing, so anything may be resent
    fake = Fake(httpx.ConnectError("refused"), httpx.Response(201, json={"id": 1, "status": "approved"}))
    ops, slept = make(fake)
    assert ops.request_action("send_x").status == "approved" and len(fake.requests) == 2

    # and the retries end
    fake = Fake(httpx.ConnectError("refused"))
    ops, slept = make(fake, max_retries=2)
    with pytest.raises(httpx.ConnectError):
        ops.get_run(7)
    assert len(fake.requests) == 3


def test_start_run_always_sends_an_idempotency_key_so_a_retry_cannot_start_two_runs():
    fake = Fake(httpx.ReadError("reset"), error(503, "unavailable"), httpx.Response(201, json=RUN))
    ops, _ = make(fake)
    run = ops.start_run(input={"topic": "x"}, session_id="s1")
    assert run.id == 7 and len(fake.requests) == 3
    keys = {request.headers["idempotency-key"] for request in fake.requests}
    assert len(keys) == 1 and next(iter(keys)).startswith("client-")
    assert json.loads(fake.requests[0].content) == {"input": {"topic": "x"}, "session_id": "s1"}

    fake = Fake(httpx.Response(200, json=RUN))
    ops, _ = make(fake)
    ops.start_run("other-agent", {"a": 1}, idempotency_key="mine")
    ops.start_run(input={})
    first, second = fake.requests
    assert first.headers["idempotency-key"] == "mine" and json.loads(first.content)["agent"] == "other-agent"
    assert second.headers["idempotency-key"] not in {"mine"} | keys


def test_typed_answers_of_usage_reservations_and_actions():
    remaining = {"budget": 3, "scope": "agent", "subject": "a", "period": "day", "limit_usd": "10.00"}
    remaining |= {"spent_usd": "1.5", "remaining_usd": "8.5", "remaining_tokens": None, "hard_stop": True}
    fake = Fake(
        httpx.Response(201, json={"id": 9, "expires_at": "2030-01-01T00:00:00Z", "tokens": 300, "usd": "0.0123"}),
        httpx.Response(200, json={"usage_id": 11, "cost_usd": "0.0042", "remaining": [remaining]}),
        httpx.Response(
            200,
            json={"id": 5, "status": "modified", "arguments": {"amount": 10}, "comment": "less", "reviewer": "rita"},
        ),
    )
    ops, _ = make(fake)
    reservation = ops.reserve("gpt-4o", "chat", 100, 200)
    assert reservation.id == 9 and str(reservation.usd) == "0.0123" and reservation.tokens == 300
    usage = ops.settle(9, 90, 150)
    assert usage.id == 11 and str(usage.cost_usd) == "0.0042"
    budget = usage.remaining[0]
    assert budget.hard_stop and str(budget.remaining_usd) == "8.5" and budget.remaining_tokens is None
    decision = ops.get_action(5)
    assert not decision.pending and decision.arguments == {"amount": 10} and decision.reviewer == "rita"


def test_reservation_context_manager_settles_or_releases():
    fake = Fake(
        httpx.Response(201, json={"id": 9, "tokens": 300, "usd": "0.01"}),
        httpx.Response(200, json={"usage_id": 11, "cost_usd": "0.004", "remaining": []}),
        httpx.Response(201, json={"id": 10, "tokens": 300, "usd": "0.01"}),
        httpx.Response(200, json={"released": True}),
    )
    ops, _ = make(fake)
    with ops.reservation("gpt-4o", "chat", 100, 200) as reserved:
        reserved.use(80, 120)
    assert reserved.usage.id == 11
    with pytest.raises(RuntimeError), ops.reservation("gpt-4o", "chat", 100, 200):
        raise RuntimeError("the call failed")
    paths = [request.url.path for request in fake.requests]
    assert paths == [
        "/api/v1/reservations",
        "/api/v1/reservations/9/settle",
        "/api/v1/reservations",
        "/api/v1/reservations/10/release",
    ]
    assert json.loads(fake.requests[1].content) == {"input_tokens": 80, "output_tokens": 120, "cached_tokens": 0}


async def test_async_client_retries_the_same_way():
    fake = Fake(error(429, "rate_limited", headers={"Retry-After": "1"}), httpx.Response(200, json=RUN))
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    async with c.AsyncAgentOps("http://agentops.test", "k", transport=httpx.MockTransport(fake)) as ops:
        ops._sleep = sleep
        assert (await ops.get_run(7)).id == 7
    assert len(fake.requests) == 2 and 1 <= slept[0] <= 1.1

    fake = Fake(error(404, "not_found", "no such run"))
    async with c.AsyncAgentOps("http://agentops.test", "k", transport=httpx.MockTransport(fake)) as ops:
        with pytest.raises(c.NotFound, match="no such run"):
            await ops.cancel_run(1)


def test_arguments_for_review_and_merging_of_modified_arguments():
    def refund(customer: str, amount: float, *, note: object = None, **extra):
        return customer, amount, note, extra

    bound = c._bind(refund, ("c-1", 20.0), {"note": object(), "channel": "email"})
    shown = c._arguments_for_review(refund, bound)
    assert shown["customer"] == "c-1" and shown["amount"] == 20.0 and shown["channel"] == "email"
    assert isinstance(shown["note"], str)  # not JSON-able: its repr
    args, kwargs = c._merge(refund, bound, {"amount": 5, "channel": "sms", "new": 1})
    customer, amount, note, extra = refund(*args, **kwargs)
    assert (customer, amount, extra) == ("c-1", 5, {"channel": "sms", "new": 1}) and note is bound.arguments["note"]

    class Tools:
        def send(self, to):
            return to

    tools = Tools()
    bound = c._bind(Tools.send, (tools, "ops"), {})
    assert c._arguments_for_review(Tools.send, bound) == {"to": "ops"}


def test_decorator_needs_a_matching_client():
    with pytest.raises(TypeError):
        c.require_approval("send_x")
    sync_ops = c.AgentOps("http://x", "k")

    async def coroutine_fn():
        return 1

    with pytest.raises(TypeError, match="AsyncAgentOps"):
        sync_ops.require_approval("send_x")(coroutine_fn)
    assert inspect.signature(sync_ops.require_approval("send_x")(lambda a: a)).parameters.keys() == {"a"}
