"""The mock server's HTTP plumbing and fault vocabulary, shared by its OpenAI side (``mock_openai``) and its
Anthropic side (``mock_anthropic``): answers, the deterministic answer text, waits that end when the client
goes away, and dropping a connection the way a broken server does."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from typing import Any

from agentops.demo.mock_usage import after_tool_result, text_of

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
# What real models also answer now and then, and result validation rejects (the seed's rules).
UNSURE_TEXT = "I don't know the answer to that."
TERSE_TEXT = "Yes."
CANNED = {"empty": "", "refusal": REFUSAL_TEXT, "unsure": UNSURE_TEXT, "terse": TERSE_TEXT}
HANG_SECONDS = 600.0
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt".split()  # noqa: SIM905
_FAULT_RE = re.compile(
    r"^(ok|reset|cut|malformed|empty|refusal|unsure|terse|hang(:\d+(\.\d+)?)?|"
    r"(delay|slow_body):\d+(\.\d+)?|[45]\d\d(:\d+(\.\d+)?)?)$"
)


def valid_fault(fault: str) -> bool:
    return bool(_FAULT_RE.match(fault))


def answer_for(req: dict[str, Any], headers: dict[str, str]) -> str:
    if isinstance(req.get("mock_content"), str):
        return req["mock_content"]
    messages = req.get("messages") or []
    if after_tool_result(messages):
        return f"Mock answer from the tool: {text_of(messages[-1].get('content'))}"
    last_user = next(
        (text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
        "",
    )
    text = f"Mock answer to: {last_user}"
    words = req.get("mock_words", headers.get("x-mock-words"))
    if words is None:
        return text
    n = int(words)
    parts = text.split()
    if n <= len(parts):
        return " ".join(parts[:n])
    return " ".join(parts + [FILLER[i % len(FILLER)] for i in range(n - len(parts))])


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _sleep_unless_disconnected(receive, seconds: float) -> bool:
    """Sleep; return True early (and True) if the client went away meanwhile."""
    try:
        await asyncio.wait_for(_until_disconnect(receive), seconds)
    except TimeoutError:
        return False
    return True


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send, receive) -> None:
    """Close the TCP connection with a reset and no response at all.

    uvicorn answers 500 when an app raises before starting a response, so raising is not enough: reach the
    transport through uvicorn's bound ``send`` and abort it with SO_LINGER 0 (a real RST).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:  # another server: headers promising a body that never comes, then an error
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100000")]})
        raise ConnectionAbortedError("mock fault: reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
    # Let uvicorn see the disconnect before we return, or it would try to send a 500 on a dead transport.
    await _sleep_unless_disconnected(receive, 1.0)
