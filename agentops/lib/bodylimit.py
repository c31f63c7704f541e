"""Request bodies over ``settings.DATA_UPLOAD_MAX_MEMORY_SIZE`` are refused before they are read: one pure
ASGI middleware around the whole application (Django pages, the REST API and the gateway), so it runs
ahead of authentication and of anything that buffers a body.

Why here: Django's ASGI handler reads the whole body (spooling it to a temporary file past
FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware or view runs, so a 1 GiB upload with no key was read
whole, partly on disk, before its 401. uvicorn has no body limit of its own, and no maintained package
does only this (Starlette's is tied to its Request), hence the few lines below.

- A ``Content-Length`` over the limit answers 413 at once; the body is never asked for (no ``100 Continue``).
- A body without one (chunked) is counted as its ``http.request`` messages arrive; past the limit the
  middleware answers 413 itself and tells the application the client went away, which ends its read
  (Django raises RequestAborted; the gateway stops) — whatever it sends after that is dropped.
The 413 closes the connection: the rest of the body is never read.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.utils.translation import gettext as _

GATEWAY_PREFIX = "/v1/"
ANTHROPIC_PREFIX = "/v1/messages"


def too_large_body(path: str, limit: int) -> bytes:
    """The 413 body in the shape the path's clients parse: OpenAI's on the gateway, ours elsewhere."""
    if path.startswith(ANTHROPIC_PREFIX):  # Anthropic's shape for its clients
        message = f"The request body is over the limit of {limit} bytes."
        return json.dumps({"type": "error", "error": {"type": "request_too_large", "message": message}}).encode()
    if path.startswith(GATEWAY_PREFIX):
        error = {
            "message": f"The request body is over the limit of {limit} bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    else:
        message = _("the request body is over %(limit)s bytes") % {"limit": limit}
        error = {"code": "too_large", "message": message, "details": {"limit": limit}}
    return json.dumps({"error": error}).encode()


def declared_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None  # uvicorn refuses a malformed one itself
    return None


class BodyLimit:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return
        seen = 0
        refused = started = False

        async def counted_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        await self._refuse(scope, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if refused and not started:
                return  # our 413 went out; the application's late answer has nowhere to go
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    @staticmethod
    async def _refuse(scope, send, limit: int) -> None:
        body = too_large_body(scope["path"], limit)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
