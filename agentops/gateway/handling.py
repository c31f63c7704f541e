"""One gateway request, run on a gateway thread: who is asking, which models answer, the guarded call,
and what goes back (see app.py for the threading). Failures become OpenAI-shaped errors here."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from agentops.gateway import human_hold, wire
from agentops.gateway.admission import (
    admit,
    authenticate,
    authorize_model,
    database_unavailable,
    log_refused,
    session_of,
)
from agentops.gateway.human_hold import Held
from agentops.gateway.tool_review import ask_for_calls, calls_of
from agentops.gateway.wire import ChatRequest, WireError
from agentops.lib.inflight import release as release_slot
from agentops.observability import metrics
from agentops.runs.models import Agent
from agentops.runtime.errors import ErrorClass, FallbackExhausted, ProviderError
from agentops.runtime.guard import guarded_llm
from agentops.runtime.protocols import ALLOW_ALL, BudgetExceeded, BudgetUnavailable
from agentops.runtime.providers.anthropic_native import NATIVE
from agentops.runtime.providers.base import LLMRequest, content_text
from agentops.runtime.providers.responses_native import NATIVE_KEY
from agentops.runtime.routing import Route, Target
from agentops.runtime.semantic_cache import semantic_headers
from agentops.wiring import guard_deps

log = structlog.get_logger("agentops.gateway")

DEFAULT_OPERATION = "chat"


# --- which models answer -----------------------------------------------------------------------------


def catalog() -> list[tuple[str, str]]:
    """``(model, owner)`` for /v1/models: the routes (model name = a route) and every model they name or a
    provider lists."""
    cfg = guard_deps().config.get()
    router = cfg.router
    entries = [(name, "agentops-route") for name in router.routes]
    entries += [(model, router.provider_for(model) or "agentops") for model in router.models()]
    return entries


def resolve(cfg, model: str, operation: str) -> Route:
    """The chain that answers ``model``: a route's chain when the model names a route; a model a route or
    provider serves, first, with the operation's chain behind it as fallbacks; else the default upstream
    (OPENAI_BASE_URL) alone; else 404."""
    router = cfg.router
    route = router.routes.get(model)
    if route is not None:
        return Route(operation, route.chain, route.use_rules, False, route.semantic)
    if router.provider_for(model) is not None:
        chosen = router.route_for(operation, model)
        return Route(operation, chosen.chain, chosen.use_rules, False, chosen.semantic)
    if cfg.default_upstream:
        return Route(operation, (Target(cfg.default_upstream, model),), use_rules=False, use_human=False)
    raise wire.model_not_found(model)


def cacheable(cfg, request: ChatRequest) -> bool:
    if request.stream or cfg.gateway_cache == "off":
        return False
    if cfg.gateway_cache == "always":
        return True
    return request.temperature == 0 and not request.has_tools


# --- the job -----------------------------------------------------------------------------------------


def parse_chat(raw: bytes, principal) -> ChatRequest:
    return wire.parse_chat_request(raw)


def chat_job(
    raw: bytes,
    headers: dict[str, str],
    outbox,
    started: float,
    request_id: str,
    parse: Callable[[bytes, Any], ChatRequest] = parse_chat,
) -> None:
    """Answer one chat completion request through ``outbox`` (see app.Outbox). ``parse(raw, principal)`` reads
    the request (another wire format translates its own to a chat completion here, e.g. /v1/responses)."""

    def answer(principal, raw: bytes, headers: dict[str, str], outbox, started: float, request_id: str, after) -> None:
        request = parse(raw, principal)
        authorize_model(principal, request.model)
        _answer(principal, request, headers, outbox, started, request_id, after)

    run_job(raw, headers, outbox, started, request_id, answer)


def held_job(held: Held, decided: dict[str, Any], outbox) -> None:
    """Answer a call held for a reviewer once they decided (human_hold.py): approved — the call goes
    ahead once, past the budget that blocked it; taken over — the reviewer's text; else the refusal."""

    def work(after: list) -> None:
        verdict = decided["decision"]
        if outbox.gone.is_set():  # nobody is listening any more: ask no upstream
            raise human_hold.refused(held, decided)
        if verdict in ("approved", "modified") and held.reason == human_hold.BUDGET_EXCEEDED:
            log.info("gateway.hold_approved", escalation=held.escalation_id, request_id=held.request_id)
            _answer(
                held.principal,
                held.request,
                held.headers,
                outbox,
                time.perf_counter(),
                held.request_id,
                after,
                approved=held,
            )
        elif verdict == "taken_over":
            info, body = human_hold.taken_over(held, decided, guard_deps().usage)
            _count(200, "stream" if held.request.stream else "json")
            if held.request.stream:
                outbox.put("start", info)
                for event in wire.chunks_of(body, held.request.include_usage):
                    outbox.put("data", event)
                outbox.put("end")
            else:
                outbox.put("reply", 200, info, wire.dumps(body))
        else:
            raise human_hold.refused(held, decided)

    _job(work, outbox, held.request_id, "stream" if held.request.stream else "json")


def openai_error(error: WireError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return error.status, error.headers()[1:], error.body()


def run_job(
    raw: bytes,
    headers: dict[str, str],
    outbox,
    started: float,
    request_id: str,
    answer: Callable[..., None],
    render: Callable[[WireError], tuple[int, list[tuple[bytes, bytes]], bytes]] = openai_error,
) -> None:
    """One gateway request on its thread: the key, its in-flight slot and rate-limit token, then
    ``answer(principal, raw, headers, outbox, started, request_id, after)``; any failure answered through
    ``outbox`` as ``render`` shapes it (OpenAI's by default; /v1/messages passes Anthropic's)."""

    def work(after: list) -> None:
        principal = authenticate(headers)
        admit(principal, outbox)  # its in-flight slot and a rate-limit token: one Redis call
        answer(principal, raw, headers, outbox, started, request_id, after)

    _job(work, outbox, request_id, "stream" if b'"stream":true' in raw.replace(b" ", b"") else "json", render)


def _job(work: Callable[[list], None], outbox, request_id: str, mode: str, render=openai_error) -> None:
    """Run ``work(after)`` on this gateway thread; its failures become errors in ``outbox``, shaped by
    ``render``."""
    after: list = []  # the settle and log line of the answer, run once it is on its way (guarded_llm's defer)

    def fail(error: WireError) -> None:
        status, extra, body = render(error)
        outbox.put("reply", status, extra, body)
        _count(status, mode)

    try:
        work(after)
    except WireError as error:
        log_refused(error, request_id)
        fail(error)
    except (OperationalError, InterfaceError):  # PostgreSQL unreachable (a key not in the cache, a tool review …)
        # Only these mean "away": a DataError is a bug of ours, and a 503 would make the SDK retry it.
        log.warning("gateway.database_unavailable", request_id=request_id, exc_info=True)
        fail(database_unavailable())
    except Exception:
        log.exception("gateway.failed", request_id=request_id)
        fail(WireError(500, "The gateway failed unexpectedly; the error is logged.", type_="server_error"))
    finally:
        for work_after in after:
            work_after()
        if outbox.slot is not None and not outbox.holding:
            # Released here, in the job's thread: a hop back to a thread from the loop would delay the end of
            # the request, and the next request on the same connection waits for that. A held answer keeps
            # its slot until the hold ends (app._chat releases it).
            release_slot(outbox.slot, outbox.seen)
            outbox.slot = None
        close_old_connections()  # return the pooled connection (web: DB_POOL) between requests


@dataclass
class Guarded:
    """A guarded call's outcome: the result, the guard's headers, the session and the cache decision."""

    result: Any
    info: list[tuple[bytes, bytes]]
    session: str
    use_cache: bool


def guarded_call(
    principal,
    request: ChatRequest,
    headers: dict[str, str],
    request_id: str,
    after: list,
    *,
    metadata: dict[str, Any] | None = None,
    cache: bool = True,
    outbox=None,
    approved: Held | None = None,
    held_job: Callable[[Held, dict[str, Any], Any], None] | None = None,
) -> Guarded | None:
    """``request`` through the guard (cache, reservation, retries, breakers, fallback, settle deferred to
    ``after``) for the key's agent; budget and upstream failures raised as ``WireError``. ``metadata``
    travels with the call (a native request for its provider); ``cache=False`` keeps it out of the cache.
    With ``outbox``, a refusal the human in the gateway takes (the agent's mode ``hold``: a budget set to
    escalate, every upstream failed) is posted as ``("hold_human", Held)`` and None returned; ``held_job``
    answers it once decided (default: held_job, a chat completion).
    ``approved``: a reviewer let this call, which a budget blocked, go ahead once — no reservation (its
    ledger row still counts against the budgets)."""
    deps = guard_deps()
    if approved is not None:
        deps = dataclasses.replace(deps, budget=ALLOW_ALL)
    cfg = deps.config.get()
    operation = headers.get("x-operation", "").strip()[:50] or DEFAULT_OPERATION
    session = session_of(headers, request.user)
    if outbox is not None:  # the slot's release marks the session active (agentops.lib.activity)
        outbox.seen = (principal.agent, session)
    route = resolve(cfg, request.model, operation)
    extra: dict[str, Any] = {"extra_body": request.upstream} if request.upstream else {}
    max_tokens = request.max_tokens or settings.GATEWAY_DEFAULT_MAX_TOKENS
    if request.cap_field == "max_completion_tokens":
        extra["max_completion_tokens"] = max_tokens
    if request.native is not None:
        extra[NATIVE_KEY] = request.native
    use_cache = cache and cacheable(cfg, request)
    llm_request = LLMRequest(
        messages=request.messages,
        model=request.model,
        operation=operation,
        max_tokens=max_tokens,
        temperature=request.temperature,
        extra=extra,
        metadata={
            "agent": principal.agent,
            "session_id": session,
            "source": "gateway",
            "request_id": request_id,
            "cache_scope": principal.agent,
            "prompt_tokens_estimate": wire.input_token_bound(request, [t.model for t in route.chain]),
            **(metadata or {}),
        },
        stream=request.stream,
        passthrough=True,
    )
    try:
        result = guarded_llm(llm_request, deps=deps, cache=use_cache, route=route, defer=after.append)
    except BudgetExceeded as exc:
        error = WireError(
            429,
            f"You exceeded your current quota: budget '{exc.budget}' blocks this call. {exc.message}",
            type_="insufficient_quota",
            code="insufficient_quota",
            retryable=False,
        )
        if outbox is not None and exc.escalate and human_hold.mode(principal.agent_id) == human_hold.HOLD:
            why = f"Budget '{exc.budget}' blocks this call and is set to escalate: {exc.message}"
            held = human_hold.hold(
                principal,
                request,
                headers,
                reason=human_hold.BUDGET_EXCEEDED,
                why=why,
                refusal=error,
                operation=operation,
                session=session,
                request_id=request_id,
            )
            held.job = held_job
            outbox.put("hold_human", held)
            return None
        raise error from None
    except BudgetUnavailable:
        raise WireError(
            503,
            "The budget store is unreachable, so no call is admitted (fail closed). Try again shortly.",
            type_="server_error",
            code="budget_unavailable",
            retry_after=5,
        ) from None
    except FallbackExhausted as exc:
        error = _exhausted(exc, cfg)
        if (
            outbox is not None
            and human_hold.holds_for(error)
            and human_hold.mode(principal.agent_id) == human_hold.HOLD
        ):
            held = human_hold.hold(
                principal,
                request,
                headers,
                reason=human_hold.ALL_FALLBACKS_FAILED,
                why=f"Every upstream for {request.model} failed: {error.message}",
                refusal=error,
                operation=operation,
                session=session,
                request_id=request_id,
                hops=[hop.to_dict() for hop in exc.hops or ()],
            )
            held.job = held_job
            outbox.put("hold_human", held)
            return None
        raise error from None
    info = [
        *semantic_headers(result, use_cache),
        (b"x-agentops-handler", result.handler.encode()),
        (b"x-agentops-model", _header_value(result.model)),
        *(approved.review_headers() if approved is not None else ()),
    ]
    _count(200, mode="stream" if request.stream else "json")
    return Guarded(result, info, session, use_cache)


def _answer(
    principal,
    request: ChatRequest,
    headers: dict[str, str],
    outbox,
    started,
    request_id: str,
    after: list,
    *,
    approved: Held | None = None,
) -> None:
    """The guarded call and its answer (``approved``: see guarded_call)."""
    call = guarded_call(principal, request, headers, request_id, after, outbox=outbox, approved=approved)
    if call is None:  # held for the human in the gateway: held_job answers once they decided
        return
    result, info, session = call.result, call.info, call.session
    mode = "stream" if request.stream else "json"
    if result.stream is not None:
        close_old_connections()  # do not hold a pooled connection while the stream flows
        _stream(principal, request, result, outbox, started, info, session)
        return
    body = body_of(result, request_id)
    info.append((b"x-agentops-overhead-ms", overhead(started, result, mode)))
    pending = review(principal, request, body["choices"][0]["message"], body["model"], session)
    if pending:
        info += annotations(pending)
    hold = bool(pending) and tool_review_mode(principal) == "hold"
    if request.stream:  # an answer that was not streamed upstream (simulated, rules, cache) as events
        outbox.put("start", info)
        if hold:
            outbox.put("hold_body", body, request.include_usage, pending)
        else:
            for event in wire.chunks_of(body, request.include_usage):
                outbox.put("data", event)
        outbox.put("end")
        return
    if hold:
        outbox.put("hold", 200, [(b"content-type", b"application/json"), *info], body, pending)
        return
    outbox.put("reply", 200, info, wire.dumps(body))


def _header_value(text: str) -> bytes:
    """``text`` (from the upstream or the client) as a valid header value: anything but printable ASCII
    becomes ``?`` (uvicorn drops the connection on a control character in a header)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text).encode()


def overhead(started: float, result, mode: str) -> bytes:
    """Milliseconds from the request's arrival to its answer, upstream calls excluded (also observed)."""
    overhead = max((time.perf_counter() - started) * 1000.0 - result.upstream_ms, 0.0)
    _overhead_histogram(mode).observe(overhead / 1000.0)
    return f"{overhead:.3f}".encode()


# The metrics' children by label values, looked up once: ``labels()`` validates and hashes its arguments
# under a lock on every call, a cost each answer paid twice or three times (a handful of statuses and modes).
@functools.cache
def _overhead_histogram(mode: str):
    return metrics.GATEWAY_OVERHEAD_SECONDS.labels(mode)


@functools.cache
def _counters(status: int, mode: str) -> tuple:
    success = "true" if status < 400 else "false"
    return metrics.GATEWAY_REQUESTS.labels(str(status), mode), metrics.REQUESTS.labels("gateway", success)


def _count(status: int, mode: str) -> None:  # once per guarded call; an error answer is not a success
    for counter in _counters(status, mode):
        counter.inc()


def body_of(result, request_id: str, *, keep_native: bool = False) -> dict[str, Any]:
    """The provider's own body when it gave one (fields we do not know survive), else one built for it."""
    if result.raw is not None and not result.cache_hit and result.handler.startswith(("primary", "backup")):
        if NATIVE in result.raw and not keep_native:  # a native Anthropic answer: its message is for /v1/messages only
            return {key: value for key, value in result.raw.items() if key != NATIVE}
        return result.raw
    return wire.completion(
        completion_id=f"chatcmpl-{request_id}",
        model=result.model,
        text=result.text,
        tool_calls=result.tool_calls,
        finish_reason=result.finish_reason,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cached_tokens=result.cached_tokens,
    )


def _exhausted(exc: FallbackExhausted, cfg) -> WireError:
    """Why nothing answered, as the status an OpenAI client expects."""
    error = exc.last_error
    hops = exc.hops or []
    if hops and all(hop.outcome == "breaker_open" for hop in hops if hop.handler != "rules"):
        return WireError(
            503,
            "Every upstream for this model is failing (circuit breaker open); retry later.",
            type_="server_error",
            code="breaker_open",
            retry_after=cfg.breaker.recovery_timeout,
        )
    if isinstance(error, ProviderError):
        status = error.status or 0
        if error.error_class is ErrorClass.BAD_REQUEST and 400 <= status < 500:
            body = getattr(getattr(error, "__cause__", None), "body", None)
            upstream = body if isinstance(body, dict) else {}
            if isinstance(upstream.get("error"), dict):
                upstream = upstream["error"]
            return WireError(
                status,
                str(upstream.get("message") or error.message),
                type_=str(upstream.get("type") or "invalid_request_error"),
                code=upstream.get("code") or ("model_not_found" if status == 404 else None),
                param=upstream.get("param"),
            )
        if error.error_class is ErrorClass.RATE_LIMIT:
            return WireError(
                429,
                "The upstream is rate limiting and retries did not get through; retry later.",
                type_="requests",
                code="rate_limit_exceeded",
                retry_after=error.retry_after or 1.0,
            )
        if error.error_class is ErrorClass.AUTHENTICATION:
            return WireError(
                502, "The upstream rejected the gateway's credentials.", type_="server_error", code="upstream_auth"
            )
        if error.error_class is ErrorClass.TIMEOUT:
            return WireError(
                504, "The upstream did not answer in time.", type_="server_error", code="timeout", retry_after=1.0
            )
    return WireError(
        503,
        f"No upstream answered: {exc}",
        type_="server_error",
        code="upstream_unavailable",
        retry_after=(error.retry_after if isinstance(error, ProviderError) else None) or 1.0,
    )


# --- streams -----------------------------------------------------------------------------------------


def _stream(principal, request: ChatRequest, result, outbox, started: float, info: list, session: str) -> None:
    stream = result.stream
    outbox.put("start", [*info, (b"x-agentops-overhead-ms", overhead(started, result, "stream"))])
    # Whether calls are reviewed depends on the answer, never on whether the request listed tools: every
    # call delta is kept back until its call is whole and reviewed (text deltas flow meanwhile). The agent's
    # review mode is read when the first call shows up, so a stream without calls costs no query.
    mode: str | None = None
    tail: _HeldTail | None = _HeldTail()
    try:
        for payload, chunk in stream:
            if outbox.gone.is_set():
                stream.close()
                return
            if not chunk.get("choices") and chunk.get("usage") is not None:
                if request.include_usage:  # else it was asked upstream only to settle exactly
                    event = wire.sse(payload)
                    if tail is not None and tail.active:
                        tail.usage_event = event
                    else:
                        outbox.put("data", event)
                continue
            if mode is None and _HeldTail.carries_call(chunk):
                mode = tool_review_mode(principal)
                tail = tail if mode != "off" else None
            if tail is not None and tail.takes(chunk, wire.sse(payload)):
                continue
            outbox.put("data", wire.sse(payload))
    except ProviderError as exc:  # the upstream broke after the stream began: no retry can repair that
        outbox.put("data", wire.stream_error(f"The upstream stream failed: {exc.message}"))
        outbox.put("data", wire.DONE)
        outbox.put("end")
        return
    finally:
        stream.close()
        close_old_connections()
    if tail is not None and tail.active:
        pending = review(principal, request, tail.message(), stream.model, session)
        if pending and mode == "hold":
            outbox.put(
                "hold_stream", tail.events(), tail.message(), tail.base, tail.finish_reason, tail.usage_event, pending
            )
        else:
            for event in tail.events():
                outbox.put("data", event)
    outbox.put("data", wire.DONE)
    outbox.put("end")


class _HeldTail:
    """A streamed answer's calls, kept back from the first call delta on until they are reviewed: the
    chunks carrying tool-call or ``function_call`` deltas, the finish chunk and the usage chunk. Text-only
    chunks are not taken (they flow on); their text is kept to rebuild the message."""

    def __init__(self) -> None:
        self.active = False
        self.buffered: list[bytes] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.legacy: dict[str, Any] | None = None
        self.content = ""
        self.base: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.usage_event: bytes | None = None

    @staticmethod
    def _choice(chunk: dict[str, Any]) -> dict[str, Any]:
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        return first if isinstance(first, dict) else {}

    @classmethod
    def carries_call(cls, chunk: dict[str, Any]) -> bool:
        delta = cls._choice(chunk).get("delta") or {}
        return bool(delta.get("tool_calls") or delta.get("function_call"))

    def takes(self, chunk: dict[str, Any], event: bytes) -> bool:
        choice = self._choice(chunk)
        delta = choice.get("delta") or {}
        self.content += delta.get("content") or ""
        if not self.carries_call(chunk) and not (self.active and choice.get("finish_reason")):
            return False
        if not self.active:
            self.active = True
            self.base = {key: chunk.get(key) for key in ("id", "object", "created", "model", "system_fingerprint")}
        self.buffered.append(event)
        for part in delta.get("tool_calls") or ():
            self._add(self.calls.setdefault(int(part.get("index") or 0), {"type": "function", "function": {}}), part)
        if delta.get("function_call"):
            if self.legacy is None:
                self.legacy = {"function": {}}
            self._add(self.legacy, {"function": delta["function_call"]})
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return True

    @staticmethod
    def _add(call: dict[str, Any], part: dict[str, Any]) -> None:
        """One delta of a call: the id and name come once (usually first), the arguments in pieces."""
        if part.get("id"):
            call["id"] = part["id"]
        function = part.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] = call["function"].get("arguments", "") + (function.get("arguments") or "")

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        if self.legacy is not None:
            message["function_call"] = self.legacy["function"]
        return message

    def events(self) -> list[bytes]:
        return self.buffered + ([self.usage_event] if self.usage_event else [])


# --- tool calls --------------------------------------------------------------------------------------


def tool_review_mode(principal) -> str:
    return Agent.objects.filter(pk=principal.agent_id).values_list("gateway_tool_review", flat=True).first() or "off"


def review(principal, request: ChatRequest, message: dict[str, Any], model: str, session: str) -> list:
    """Permission requests for the answer's tool and function calls that a reviewer must decide, as
    ``(position, request)`` (none: nothing to do)."""
    mode = tool_review_mode(principal) if calls_of(message) else "off"
    if mode == "off":
        return []
    prompt = next((content_text(m.get("content")) for m in reversed(request.messages) if m.get("role") == "user"), "")
    return ask_for_calls(principal.agent_id, principal.agent, session, message, prompt, model, held=mode == "hold")


def annotations(pending: list) -> list[tuple[bytes, bytes]]:
    ids = ",".join(str(action.escalation_id) for _, action in pending)
    urls = ",".join(f"/review/{action.escalation_id}/" for _, action in pending)
    return [(b"x-agentops-escalations", ids.encode()), (b"x-agentops-review-url", urls.encode())]
