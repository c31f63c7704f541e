"""The lean transport of the OpenAI-compatible provider: one POST on the SDK client's own pooled HTTP client,
with the SDK's request building, option models and response classes left out, and its failures raised as the
SDK raises them.

Why: on the guard's hot path the SDK's per-call machinery (options models copied per call, header merging,
its retry loop, response models) costs about 0.6 ms of CPU per call on top of the HTTP exchange itself — as
much as the whole guard around it. The HTTP client underneath stays the SDK's: the same connection pool
(keep-alive, limits), the same transport (TLS verification, the outbound-address guard of
``agentops/lib/netguard.py`` that the wiring installs), the same per-phase ``timeout``.

Failures keep the SDK's exception classes (``openai.RateLimitError`` with the response, so ``Retry-After``
stays readable, ``InternalServerError``, ``APIStatusError``, ``APITimeoutError``, ``APIConnectionError`` …),
built as the SDK builds them, so ``errors.classify`` and everything keyed on its classes work unchanged.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import openai

try:  # the SDK's own HTTP client library (recent SDKs vendor a fork of httpx under this name)
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - older SDKs use httpx itself
    import httpx as sdk_http

# The SDK's status → exception mapping (openai.OpenAI._make_status_error), as a table.
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
# What the SDK wraps as a connection failure (openai._httpx2.request_exceptions), timeouts first.
_TIMEOUTS = (sdk_http.TimeoutException,)
_CONNECTION_FAILURES = (sdk_http.RequestError, ssl.SSLError)


class LeanTransport:
    """POSTs JSON to ``client.base_url`` + a path on the SDK client's HTTP client with its headers (auth,
    the client's default and custom headers), computed once."""

    def __init__(self, client: openai.OpenAI) -> None:
        # The SDK keeps its HTTP client (the one given as ``http_client``, else its default) here; there is no
        # public accessor, and using it keeps one pool and the wiring's guarded transport.
        self.http: Any = client._client
        self.base_url = str(client.base_url).rstrip("/")
        # The HTTP client's own headers, then the SDK's (auth, content type, its user agent, custom headers):
        # merged once, as bytes, so a request is built without the client's per-call merging (~70 µs). The
        # SDK's ``X-Stainless-*`` telemetry headers describe its own request machinery, not used here.
        headers = sdk_http.Headers(self.http.headers)
        headers.update(
            {k: v for k, v in {**client.auth_headers, **client.default_headers}.items() if isinstance(v, str)}
        )
        self.headers = [
            (k.encode("ascii"), v.encode("latin-1"))
            for k, v in headers.multi_items()
            if not k.startswith("x-stainless")
        ]
        self._urls: dict[str, Any] = {}

    def post(self, path: str, body: Mapping[str, Any], timeout: float, *, stream: bool = False) -> Any:
        """The response of ``POST path`` (2xx only; read unless ``stream``); failures raise as the SDK does."""
        content = _dumps(body)  # a body that is not JSON (NaN, an object) raises here as in the SDK: unexpected
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = sdk_http.URL(self.base_url + path)
        # What ``Client.build_request`` makes (the SDK's client has no params, cookies or auth of its own).
        phases = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        request = sdk_http.Request("POST", url, content=content, headers=self.headers, extensions={"timeout": phases})
        try:
            response = self.http.send(request, stream=stream)
        except _TIMEOUTS as exc:
            raise openai.APITimeoutError(request=request) from exc
        except openai.OpenAIError:
            raise
        except _CONNECTION_FAILURES as exc:
            raise openai.APIConnectionError(request=request) from exc
        if response.status_code >= 400:
            raise status_error(response)
        return response


def status_error(response: Any) -> openai.APIStatusError:
    """The SDK's exception for an error response (its body read), message and body as the SDK makes them."""
    try:
        response.read()
        text = response.text.strip()
    except Exception:  # a body cut short: the status alone still classifies the failure
        text = ""
    message = f"Error code: {response.status_code}"
    body: Any = text
    try:
        body = json.loads(text)
    except ValueError:
        pass
    else:
        error = body.get("error", body) if isinstance(body, Mapping) else None
        detail = error.get("message") if isinstance(error, Mapping) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
    data = body.get("error", body) if isinstance(body, Mapping) else body
    status = response.status_code
    cls = _STATUS_ERRORS.get(status) or (openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(message, response=response, body=data)


def _dumps(body: Mapping[str, Any]) -> bytes:
    # The SDK's serialisation (openai._utils._json.openapi_dumps): compact, UTF-8, no NaN.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default).encode()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    dump = getattr(value, "model_dump", None)  # a pydantic model (e.g. an SDK param type)
    if dump is not None:
        return dump(exclude_unset=True, mode="json", by_alias=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
