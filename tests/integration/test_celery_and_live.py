"""Celery round trip through a real worker process, metrics merged across processes, and a Channels
WebSocket round trip through the real Redis channel layer served by uvicorn."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import pytest
import websockets

from agentops.lib import live
from tests.fixtures.people import ALICE, ROOT, Person


def test_celery_round_trip_through_a_real_worker(worker):
    from agentops.ops.tasks import ping

    token = uuid.uuid4().hex
    result = ping.delay(token).get(timeout=20)
    assert result["token"] == token
    assert result["pid"] != __import__("os").getpid()  # it ran in the worker, not here


def _worker_ping_count(metrics_text: str) -> float:
    match = re.search(
        r'agentops_celery_tasks_total\{outcome="success",task="agentops.ping"\} ([0-9.e+]+)', metrics_text
    )
    return float(match.group(1)) if match else 0.0


def test_metrics_show_a_counter_incremented_in_a_worker_process(worker, web):
    from agentops.ops.tasks import ping

    before = _worker_ping_count(httpx.get(web.extra["url"] + "/metrics", timeout=10).text)
    for _ in range(3):
        ping.delay("metrics").get(timeout=20)
    after_text = httpx.get(web.extra["url"] + "/metrics", timeout=10).text
    assert _worker_ping_count(after_text) == before + 3
    assert "agent_memory_usage_bytes" in after_text


def _session_cookie(client, person: Person) -> str:
    client.force_login(person.user())
    return client.cookies["sessionid"].value


async def _listen(url: str, cookie: str, count: int, timeout: float = 10) -> list[dict]:
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    async with websockets.connect(url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": origin}) as ws:
        received = []
        async with asyncio.timeout(timeout):
            while len(received) < count:
                received.append(json.loads(await ws.recv()))
        return received


@pytest.mark.django_db(transaction=True)
def test_websocket_round_trip_through_the_redis_layer(web, client):
    cookie = _session_cookie(client, ROOT)
    ws_url = web.extra["url"].replace("http://", "ws://") + "/ws/live/ops/"

    async def scenario():
        listener = asyncio.create_task(_listen(ws_url, cookie, count=1))
        await asyncio.sleep(0.5)  # let the socket join its group
        await asyncio.to_thread(live.send_now, "ops", "breaker.changed", {"name": "sim:large"}, wait=True)
        return await listener

    [message] = asyncio.run(scenario())
    assert message == {"group": "ops", "event": "breaker.changed", "data": {"name": "sim:large"}}


@pytest.mark.django_db(transaction=True)
def test_many_publishes_from_one_process_reuse_one_loop_and_arrive(web, client):
    """The channels-redis trap: thousands of sync sends from a worker-like process."""
    cookie = _session_cookie(client, ROOT)
    ws_url = web.extra["url"].replace("http://", "ws://") + "/ws/live/ops/"
    total = 2000

    async def scenario():
        listener = asyncio.create_task(_listen(ws_url, cookie, count=total, timeout=60))
        await asyncio.sleep(0.5)

        def burst():
            for i in range(total - 1):
                live.send_now("ops", "tick", {"i": i})
            live.send_now("ops", "tick", {"i": total - 1}, wait=True)

        await asyncio.to_thread(burst)
        return await listener

    received = asyncio.run(scenario())
    assert [m["data"]["i"] for m in received] == list(range(total))


@pytest.mark.django_db(transaction=True)
def test_websocket_refuses_anonymous_and_wrong_role(web, client):
    cookie = _session_cookie(client, ALICE)
    ws_url = web.extra["url"].replace("http://", "ws://") + "/ws/live/ops/"
    origin = web.extra["url"]

    async def closed_code(headers):
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            return info.value.rcvd.code if info.value.rcvd else None

    async def rejected(headers):
        try:
            return await closed_code(headers)
        except websockets.InvalidStatus as exc:  # closed before accept → HTTP 403 handshake
            return exc.response.status_code

    assert asyncio.run(rejected({"Origin": origin})) in (4401, 403)
    assert asyncio.run(rejected({"Origin": origin, "Cookie": f"sessionid={cookie}"})) in (4403, 403)


@pytest.mark.django_db(transaction=True)
def test_publish_waits_for_commit(web, client):
    """An event published inside a transaction that rolls back is never sent."""
    from django.db import transaction

    cookie = _session_cookie(client, ROOT)
    ws_url = web.extra["url"].replace("http://", "ws://") + "/ws/live/ops/"

    def publish_rolled_back_then_committed():
        try:
            with transaction.atomic():
                live.publish("ops", "rolled-back")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        with transaction.atomic():
            live.publish("ops", "committed")

    async def scenario():
        listener = asyncio.create_task(_listen(ws_url, cookie, count=1))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(publish_rolled_back_then_committed)
        return await listener

    [message] = asyncio.run(scenario())
    assert message["event"] == "committed"
