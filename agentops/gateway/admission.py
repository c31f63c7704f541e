"""Who is asking a gateway request: the bearer key's principal, its scope and models, its in-flight slot and
rate-limit token. Failures are OpenAI-shaped ``WireError``s (the gateway's error shape), and each refusal the
gateway answers is logged (``log_refused``)."""

from __future__ import annotations

import structlog

from agentops.gateway.wire import WireError
from agentops.keys.tokens import lookup
from agentops.lib.inflight import TooManyInFlight, admit_within_rate
from agentops.lib.ratelimit import RateLimited, take

SCOPE = "gateway"

log = structlog.get_logger("agentops.gateway")


def log_refused(error: WireError, request_id: str) -> None:
    """One line per refusal (bad key, scope, model, rate, budget, body; an upstream error passed on): an
    operator looking for a misbehaving agent finds its 401s and 429s, not only its answered calls. The
    messages never carry the key."""
    (log.warning if error.status >= 500 else log.info)(
        "gateway.refused",
        request_id=request_id,
        status=error.status,
        type=error.type,
        code=error.code,
        param=error.param,
        message=error.message[:300],
    )


def bearer_key(headers: dict[str, str]) -> str:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def invalid_api_key() -> WireError:
    return WireError(
        401,
        "Incorrect API key provided. Use an agentops agent key (ao_…) as the bearer token; "
        "create one with `manage.py create_api_key AGENT`.",
        code="invalid_api_key",
    )


def authenticate(headers: dict[str, str]):
    """The verified principal of the bearer key, with the gateway scope; else 401 (unknown, revoked, expired)
    / 403 (its agent disabled, or no gateway scope)."""
    key = bearer_key(headers)
    principal = lookup(key) if key else None
    if principal is None:
        raise invalid_api_key()
    if not principal.enabled:
        raise WireError(
            403,
            f"The agent '{principal.agent}' is disabled: its keys are refused until an agent admin enables it again.",
            type_="permission_error",
            code="agent_disabled",
        )
    if not principal.allows(SCOPE):
        raise WireError(
            403,
            f"This API key lacks the '{SCOPE}' scope needed for /v1.",
            type_="permission_error",
            code="insufficient_scope",
        )
    return principal


def database_unavailable() -> WireError:
    return WireError(
        503,
        "The database is unreachable; nothing was sent upstream. Try again shortly.",
        type_="server_error",
        code="database_unavailable",
        retry_after=5,
    )


def admit(principal, outbox) -> None:
    """Take one of the key's in-flight slots for this request (released when the job ends, or by app._chat
    when a held answer's hold ends; a stream's job ends with the stream) and a token of its rate limit, in
    one Redis call; at the cap, or without a token, 429 in OpenAI's shape."""
    try:
        outbox.slot = admit_within_rate(principal.key_id, principal.max_in_flight, principal.rate_per_minute)
    except RateLimited as exc:
        raise rate_limited(exc) from None
    except TooManyInFlight as exc:
        raise WireError(
            429,
            f"This API key already has {exc.cap} requests in flight (its max_in_flight); retry when one has finished.",
            type_="requests",
            code="too_many_requests_in_flight",
            retry_after=1.0,
        ) from None


def session_of(headers: dict[str, str], user: str) -> str:
    """The call's session: ``X-Session-Id``, else the body's ``user`` (``metadata.user_id`` for Messages)."""
    return (headers.get("x-session-id", "").strip() or user)[:200]


def authorize_model(principal, model: str) -> None:
    """The key's allowed models (set on the Agents screen; empty = all): another model is 403 in OpenAI's
    shape. ``model`` is the name exactly as the request gives it (a route's fallbacks stay behind it)."""
    if not principal.allows_model(model):
        raise WireError(
            403,
            f"This API key may not use the model '{model}'; it may use: {', '.join(sorted(principal.allowed_models))}.",
            type_="permission_error",
            param="model",
            code="model_not_allowed",
        )


def rate_limit(principal) -> None:
    """A token of the key's rate limit for a request that takes no in-flight slot (``admit`` takes both)."""
    try:
        take(principal.key_id, principal.rate_per_minute)
    except RateLimited as exc:
        raise rate_limited(exc) from None


def rate_limited(exc: RateLimited) -> WireError:
    return WireError(
        429,
        f"Rate limit reached for this API key; retry after {exc.retry_after:.2f} s.",
        type_="requests",
        code="rate_limit_exceeded",
        retry_after=exc.retry_after,
    )
