"""The gateway lets a request in with ONE Redis call (agentops.lib.inflight.admit_within_rate): an in-flight slot
and a rate-limit token together, spending neither when the other refuses, and admitting when Redis is away."""

from __future__ import annotations

import uuid

import pytest

from agentops.lib import inflight, ratelimit
from agentops.lib.inflight import TooManyInFlight, admit_within_rate
from agentops.lib.ratelimit import RateLimited
from agentops.lib.redis import runtime_redis


@pytest.fixture
def key_id() -> int:
    key = int(uuid.uuid4().int % 10**9) + 10**9  # no real key's id: its slots and bucket are this test's own
    yield key
    runtime_redis().delete(inflight.slots_key(key), ratelimit.bucket_key(key))


def tokens_left(key_id: int) -> float:
    return float(runtime_redis().hget(ratelimit.bucket_key(key_id), "tokens"))


def test_a_slot_and_a_token_in_one_call_and_a_full_key_spends_no_token(key_id):
    first = admit_within_rate(key_id, cap=1, per_minute=60)
    assert inflight.in_flight(key_id) == 1 and tokens_left(key_id) == pytest.approx(59, abs=0.1)
    with pytest.raises(TooManyInFlight):
        admit_within_rate(key_id, cap=1, per_minute=60)
    assert tokens_left(key_id) == pytest.approx(59, abs=0.1)  # refused at the cap: the token is not spent
    inflight.release(first)
    assert inflight.in_flight(key_id) == 0


def test_without_a_token_no_slot_is_taken_and_the_wait_is_told(key_id):
    slots = [admit_within_rate(key_id, cap=10, per_minute=2) for _ in range(2)]
    with pytest.raises(RateLimited) as refused:
        admit_within_rate(key_id, cap=10, per_minute=2)
    assert 0 < refused.value.retry_after <= 30  # 2 a minute: one token back within 30 s
    assert inflight.in_flight(key_id) == 2  # the refused request holds no slot
    for slot in slots:
        inflight.release(slot)


def test_the_bucket_is_the_one_the_plain_rate_limit_spends(key_id):
    """The REST API's limiter (ratelimit.take) and the gateway's admission share one bucket per key."""
    ratelimit.take(key_id, per_minute=2)
    admit_within_rate(key_id, cap=10, per_minute=2)
    with pytest.raises(RateLimited):
        ratelimit.take(key_id, per_minute=2)


def test_redis_away_admits(key_id, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("redis is away")

    monkeypatch.setattr(inflight, "_limited_script", unreachable)
    assert admit_within_rate(key_id, cap=0, per_minute=1)[0] == key_id  # would be refused if Redis answered
