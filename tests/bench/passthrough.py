"""The bare Python passthrough: the physical limit of a Python gateway, the gateway bench's first baseline.

A raw ASGI app (no framework, no auth, no guard, no logging) that forwards ``POST /v1/chat/completions`` to
``PASSTHROUGH_UPSTREAM`` (the mock's ``/v1``) through ONE ``httpx.AsyncClient`` created at startup (HTTP/1.1,
keep-alive pool) and answers with the upstream's status, content-type and body. The request body goes upstream
as its bytes, with its content-type. A streamed answer (``text/event-stream``) is relayed chunk by chunk as it
arrives. ``GET /healthz`` answers 200 for the launcher's readiness poll; anything else is a 404.

Served by the same command line as the gateway's web process in the bench (``python -m uvicorn <app> --host
127.0.0.1 --port N --no-access-log``: uvicorn's defaults, i.e. uvloop and httptools, one process)::

    PASSTHROUGH_UPSTREAM=http://127.0.0.1:8099/v1 python -m uvicorn tests.bench.passthrough:app --port 8100
"""

from __future__ import annotations

import os

import httpx

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:8099/v1").rstrip("/")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")

_client: httpx.AsyncClient | None = None


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _plain(send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _forward(scope, receive, send) -> None:
    body = await _body(receive)
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
    request = _client.build_request(
        "POST", UPSTREAM + "/chat/completions", content=body, headers={"content-type": content_type.decode()}
    )
    try:
        response = await _client.send(request, stream=True)
    except httpx.HTTPError as exc:  # the upstream is away: a 502, as any proxy would answer
        await _plain(send, 502, f"upstream: {type(exc).__name__}".encode())
        return
    try:
        answer_type = response.headers.get("content-type", "application/json").encode()
        if answer_type.startswith(b"text/event-stream"):
            headers = [(b"content-type", answer_type), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _plain(send, response.status_code, await response.aread(), answer_type)
    finally:
        await response.aclose()


async def _lifespan(receive, send) -> None:
    global _client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=60)
            _client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0), http2=False)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _client is not None:
                await _client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] != "http":
        return
    elif scope["method"] == "POST" and scope["path"] in CHAT_PATHS:
        await _forward(scope, receive, send)
    elif scope["path"] == "/healthz":
        await _plain(send, 200, b"ok")
    else:
        await _plain(send, 404, b"not found")
