"""``POST /v1/embeddings``: OpenAI's embeddings through the guard (``guarded_embeddings``).

What it accepts and answers is OpenAI's: ``input`` as a string, a list of strings, a list of token ids or a
list of such lists (at most 2048 inputs), ``encoding_format`` ``float`` or ``base64`` (little-endian
float32), ``dimensions`` where the model accepts it, ``user``; the answer is ``{"object": "list", "data":
[{"object": "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}`` with
the model named as the provider answered, and our headers (request id, cache, handler, model, overhead,
cost). Errors have OpenAI's shape; no request body makes a 5xx.

The reservation holds the input tokens (no output): counted with the model's tokenizer for OpenAI's models
(exact), else as UTF-8 bytes (a bound). Which models answer: a route's chain when ``model`` names a route;
else the model first, then the other models of the operation's route (``X-Operation``, default
``embeddings``) when there is one; else the model alone on its provider or the default upstream. An
embeddings call never falls back to the default chat chain: another model's vectors live in another space.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.db import InterfaceError, OperationalError, close_old_connections

from agentops.gateway import wire
from agentops.gateway.admission import (
    admit,
    authenticate,
    authorize_model,
    database_unavailable,
    log_refused,
    session_of,
)
from agentops.gateway.handling import _count, _exhausted, _header_value, overhead
from agentops.gateway.wire import WireError, bad_request
from agentops.lib import jsonbody
from agentops.lib.inflight import release as release_slot
from agentops.runtime.embeddings import guarded_embeddings, input_token_bound, item_tokens
from agentops.runtime.errors import FallbackExhausted
from agentops.runtime.guard import _route_model
from agentops.runtime.model_names import EMBEDDING_MAX_INPUT_TOKENS, embedding_model
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from agentops.runtime.providers.base import EmbeddingsRequest
from agentops.runtime.routing import Route, Target
from agentops.wiring import guard_deps
from budgets.actions.prices import quoted_cost

log = structlog.get_logger("agentops.gateway")

DEFAULT_OPERATION = "embeddings"
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000  # OpenAI's limit over all inputs of one request
MAX_TOKEN_ID = 2**31 - 1
ENCODINGS = ("float", "base64")
INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


@dataclass
class EmbeddingsBody:
    """A validated ``/v1/embeddings`` body. ``upstream`` holds every field but ``model`` and ``input``, sent on
    as it came (``encoding_format``, ``dimensions``, ``user``, a provider's own fields)."""

    model: str
    input: Any
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str = ""
    upstream: dict[str, Any] = field(default_factory=dict)


def parse_embeddings_request(raw: bytes) -> EmbeddingsBody:
    """The request, or a ``WireError`` (400) naming the offending parameter."""
    try:
        body = jsonbody.loads(raw)
    except jsonbody.BodyProblem as problem:  # nested too deep, or text PostgreSQL cannot store (NUL)
        raise bad_request(problem.message, param=problem.where or None) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("you must provide a model parameter", param="model")
    if len(model) > wire.MAX_MODEL_CHARS:
        raise bad_request(f"model must be at most {wire.MAX_MODEL_CHARS} characters", param="model")
    value = body.get("input")
    _check_input(value)
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise bad_request(
            f"Invalid value for 'encoding_format': {encoding!r}; supported values are 'float' and 'base64'.",
            param="encoding_format",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise bad_request(f"Invalid value for 'dimensions': {dimensions!r}; expected an integer ≥ 1.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"{user!r} is not of type 'string' - 'user'", param="user")
    upstream = {name: v for name, v in body.items() if name not in ("model", "input") and v is not None}
    return EmbeddingsBody(model, value, encoding or "float", dimensions, user or "", upstream)


def _token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_TOKEN_ID for v in value)
    )


def _check_input(value: Any) -> None:
    """One non-empty string, one list of token ids, or 1–2048 of either (OpenAI's rules)."""
    if value is None:
        raise bad_request("'input' is a required property", param="input")
    if isinstance(value, str):
        if not value:
            raise bad_request(f"{INVALID_INPUT} (It is an empty string.)", param="input")
        return
    if not isinstance(value, list) or not value:
        raise bad_request(f"{INVALID_INPUT} (Send a string, token ids or a non-empty array of them.)", "input")
    if len(value) > MAX_INPUTS:
        raise bad_request(f"Invalid 'input': maximum {MAX_INPUTS} inputs per request, got {len(value)}.", "input")
    if _token_list(value):
        return
    for index, item in enumerate(value):
        if not ((isinstance(item, str) and item) or _token_list(item)):
            raise bad_request(
                f"{INVALID_INPUT} (input[{index}] must be a non-empty string or a non-empty array of token ids.)",
                param=f"input[{index}]",
            )


def resolve_embeddings(cfg, model: str, operation: str) -> Route:
    """The chain that answers (see the module docstring); 404 when nothing serves ``model``."""
    router = cfg.router
    route = router.routes.get(model)
    if route is not None:
        return Route(operation, route.chain, use_rules=False, use_human=False)
    provider = router.provider_for(model)
    if provider is not None:
        first = Target(provider, model)
        behind = router.routes.get(operation)
        rest = tuple(t for t in (behind.chain if behind is not None else ()) if t != first)
        return Route(operation, (first, *rest), use_rules=False, use_human=False)
    if cfg.default_upstream:
        return Route(operation, (Target(cfg.default_upstream, model),), use_rules=False, use_human=False)
    raise wire.model_not_found(model)


def check_for_models(request: EmbeddingsBody, models: Sequence[str]) -> int:
    """What OpenAI's embedding models among ``models`` would refuse (``dimensions`` they do not accept or
    exceed, an input over 8192 tokens, over 300,000 tokens in all) as its 400; else the input's token bound
    over every model (what the reservation holds)."""
    for model in dict.fromkeys(models):
        known = embedding_model(model)
        if known is None:
            continue
        width, accepts = known
        if request.dimensions is not None and not accepts:
            raise bad_request("This model does not support specifying dimensions.", param="dimensions")
        if request.dimensions is not None and request.dimensions > width:
            raise bad_request(f"Invalid value for 'dimensions': {model} allows at most {width}.", "dimensions")
        counts = item_tokens(request.input, model)
        batch = isinstance(request.input, list) and not _token_list(request.input)
        for index, count in enumerate(counts):
            if count > EMBEDDING_MAX_INPUT_TOKENS:
                where = f"input[{index}]" if batch else "input"
                raise bad_request(
                    f"This model's maximum context length is {EMBEDDING_MAX_INPUT_TOKENS} tokens, however you "
                    f"requested {count} tokens in {where}. Please reduce your input.",
                    param=where,
                )
        if sum(counts) > MAX_REQUEST_TOKENS:
            raise bad_request(
                f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request.", param="input"
            )
    return input_token_bound(request.input, models)


def encoded(body: dict[str, Any], encoding: str) -> bool:
    """Put every vector of ``body`` in ``encoding`` (base64 = little-endian float32, as OpenAI sends it), for
    an upstream that ignored ``encoding_format``; True when anything changed."""
    changed = False
    for item in body.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if encoding == "base64" and isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
            changed = True
        elif encoding == "float" and isinstance(vector, str):
            raw = base64.b64decode(vector)
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
            changed = True
    return changed


# --- the job -----------------------------------------------------------------------------------------


def embeddings_job(raw: bytes, headers: dict[str, str], outbox, started: float, request_id: str) -> None:
    """Answer one embeddings request through ``outbox`` (see app.Outbox): always one ``reply``."""
    after: list = []  # the settle and log line, run once the answer is on its way
    try:
        principal = authenticate(headers)
        admit(principal, outbox)  # its in-flight slot and a rate-limit token: one Redis call
        request = parse_embeddings_request(raw)
        outbox.seen = (principal.agent, session_of(headers, request.user))  # marked active at the slot's release
        authorize_model(principal, request.model)
        status, info, body = _answer(principal, request, headers, started, request_id, after)
        outbox.put("reply", status, info, body)
        _count(status, mode="json")
    except WireError as error:
        log_refused(error, request_id)
        outbox.put("reply", error.status, error.headers()[1:], error.body())
        _count(error.status, mode="json")
    except (OperationalError, InterfaceError):  # PostgreSQL unreachable (a key not in the cache …)
        log.warning("gateway.database_unavailable", request_id=request_id, exc_info=True)
        error = database_unavailable()
        outbox.put("reply", error.status, error.headers()[1:], error.body())
        _count(error.status, mode="json")
    except Exception:
        log.exception("gateway.failed", request_id=request_id)
        error = WireError(500, "The gateway failed unexpectedly; the error is logged.", type_="server_error")
        outbox.put("reply", 500, error.headers()[1:], error.body())
        _count(500, mode="json")
    finally:
        for work in after:
            work()
        if outbox.slot is not None:
            release_slot(outbox.slot, outbox.seen)
            outbox.slot = None
        close_old_connections()


def _answer(
    principal, request: EmbeddingsBody, headers: dict[str, str], started: float, request_id: str, after: list
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    deps = guard_deps()
    cfg = deps.config.get()
    operation = headers.get("x-operation", "").strip()[:50] or DEFAULT_OPERATION
    session = session_of(headers, request.user)
    route = resolve_embeddings(cfg, request.model, operation)
    models = [target.model for target in route.chain]
    bound = check_for_models(request, [request.model, *models])
    embeddings_request = EmbeddingsRequest(
        input=request.input,
        model=request.model,
        operation=operation,
        extra=request.upstream,
        metadata={
            "agent": principal.agent,
            "session_id": session,
            "source": "gateway",
            "request_id": request_id,
            "cache_scope": principal.agent,
            "prompt_tokens_estimate": bound,
        },
    )
    use_cache = cfg.gateway_cache != "off"  # vectors are deterministic: the default caches them too
    try:
        answer = guarded_embeddings(embeddings_request, deps=deps, route=route, cache=use_cache, defer=after.append)
    except BudgetExceeded as exc:
        raise WireError(
            429,
            f"You exceeded your current quota: budget '{exc.budget}' blocks this call. {exc.message}",
            type_="insufficient_quota",
            code="insufficient_quota",
            retryable=False,
        ) from None
    except BudgetUnavailable:
        raise WireError(
            503,
            "The budget store is unreachable, so no call is admitted (fail closed). Try again shortly.",
            type_="server_error",
            code="budget_unavailable",
            retry_after=5,
        ) from None
    except FallbackExhausted as exc:
        raise _exhausted(exc, cfg) from None

    result = answer.result
    body = result.raw or {}
    content = answer.content
    if encoded(body, request.encoding_format) or result.cache_hit or content is None:
        content = wire.dumps(body)
    info = [
        (b"x-agentops-cache", b"hit" if result.cache_hit else (b"miss" if use_cache else b"bypass")),
        (b"x-agentops-handler", result.handler.encode()),
        (b"x-agentops-model", _header_value(result.model)),
        *_cost_header(principal.agent, request, result, models),
        (b"x-agentops-overhead-ms", overhead(started, result, "json")),
    ]
    return 200, info, content


def _cost_header(agent: str, request: EmbeddingsBody, result, models: list[str]) -> list[tuple[bytes, bytes]]:
    """``X-Agentops-Cost-Usd``: what the ledger row will say (priced as the settle prices it). Left out when the
    prices cannot be read just now: the answer is paid for and goes out all the same."""
    usage = {
        "model": result.model,
        "requested_model": request.model,
        "route_model": _route_model(result),
        "model_reserved": models[0] if models else request.model,
        "input_tokens": result.input_tokens,
        "cache_hit": result.cache_hit,
    }
    try:
        return [(b"x-agentops-cost-usd", str(quoted_cost(agent, usage)).encode())]
    except Exception:
        log.warning("gateway.cost_unavailable", exc_info=True)
        return []
