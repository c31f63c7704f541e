"""A Python client for the agentops REST API (/api/v1, DESIGN.md §8). Needs only httpx; imports nothing from
Django, so an agent that lives outside agentops can copy or install this one file.

    from agentops.client import AgentOps, ActionRejected

    ops = AgentOps("http://127.0.0.1:8000", api_key="ao_…")

    @ops.require_approval("send_refund", value=250.0)
    def send_refund(customer: str, amount: float) -> str:
        return f"refunded {amount} to {customer}"

    send_refund("c-42", 250.0)  # waits for a reviewer; raises ActionRejected if rejected

``AgentOps`` is synchronous, ``AsyncAgentOps`` the same with ``await``. Every endpoint has a typed method.
Errors raise ``ApiError(status, code, message, details)`` or a subclass (``BudgetExceeded`` 402,
``RateLimited`` 429 after the retries, ``NotFound``, ``Forbidden``, ``Unauthenticated``, ``Conflict``,
``InvalidRequest``, ``Unavailable``). 429 and 503 answers are retried, honouring ``Retry-After`` (capped),
with jittered exponential backoff otherwise; connection errors are retried for idempotent requests (GET,
PUT, DELETE, and POST /runs, which always carries an ``Idempotency-Key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import inspect
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx

__all__ = [
    "ActionDecision",
    "ActionRejected",
    "AgentOps",
    "ApiError",
    "AsyncAgentOps",
    "BudgetExceeded",
    "BudgetRemaining",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "Reservation",
    "Run",
    "RunList",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "require_approval",
]

API_PREFIX = "/api/v1"
TERMINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DECIDED_ACTION_STATUSES = frozenset({"approved", "modified", "taken_over", "rejected", "expired"})
LONG_POLL_SECONDS = 30.0  # one long-poll request; the server caps ?wait= at API_MAX_WAIT_SECONDS (60 by default)
RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answer of the API: HTTP status, stable machine code, a sentence, and details."""

    def __init__(self, status: int, code: str, message: str, details: dict | list | None = None, *, headers=None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details if details is not None else {}
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class Unauthenticated(ApiError):
    """401: the key is missing, unknown or revoked."""


class BudgetExceeded(ApiError):
    """402: a hard budget does not allow this; ``details`` names the budget and maybe a cheaper model."""


class Forbidden(ApiError):
    """403: the key lacks the scope this endpoint needs."""


class NotFound(ApiError):
    """404: no such object (also another agent's objects)."""


class Conflict(ApiError):
    """409: e.g. cancelling a run that already finished."""


class InvalidRequest(ApiError):
    """400 / 413 / 422: the request was malformed, too large or failed validation."""


class RateLimited(ApiError):
    """429 after every retry was used up; ``retry_after`` is the server's last hint in seconds."""

    @property
    def retry_after(self) -> float | None:
        return _retry_after_seconds(self.headers.get("retry-after"))


class Unavailable(ApiError):
    """503 after every retry (e.g. ``budget_unavailable``: the budget store is down and fails closed)."""


_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    402: BudgetExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


class ActionRejected(Exception):
    """A reviewer rejected the action (or it expired and the safe default, reject, applied)."""

    def __init__(self, decision: ActionDecision):
        self.decision = decision
        self.comment = decision.comment
        why = f": {decision.comment}" if decision.comment else ""
        super().__init__(f"action {decision.id} was {decision.status}{why}")


def error_from_response(response: httpx.Response) -> ApiError:
    """The ApiError (subclass) for an error response; tolerates bodies that are not our error shape."""
    code, message, details = f"http_{response.status_code}", response.reason_phrase or "error", {}
    try:
        body = response.json()
    except ValueError:  # not JSON (a proxy's page, say): keep the start of it in the details
        body = None
        if response.text:
            details = {"body": response.text[:500]}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details") if error.get("details") is not None else {}
    cls = _ERRORS.get(response.status_code, ApiError)
    return cls(response.status_code, code, message, details, headers=response.headers)


# ---------------------------------------------------------------------------------------------- types


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass
class Run:
    id: int
    agent: str
    status: str
    session_id: str = ""
    input: Any = None
    output: Any = None
    error: str = ""
    cancel_requested: bool = False
    created_at: str | None = None
    updated_at: str | None = None
    url: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        return cls(
            id=data["id"],
            agent=data.get("agent", ""),
            status=data.get("status", ""),
            session_id=data.get("session_id") or "",
            input=data.get("input"),
            output=data.get("output"),
            error=data.get("error") or "",
            cancel_requested=bool(data.get("cancel_requested")),
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
            url=data.get("url"),
            raw=data,
        )


@dataclass
class RunList:
    items: list[Run]
    count: int

    @classmethod
    def from_dict(cls, data: dict) -> RunList:
        return cls(items=[Run.from_dict(item) for item in data.get("items", [])], count=data.get("count", 0))


@dataclass
class ActionDecision:
    """The answer to a permission request (POST /actions) or its later state (GET /actions/{id}).

    ``status`` is ``approved`` | ``pending`` | ``rejected`` at first, later also ``modified``, ``taken_over``
    or ``expired``. ``arguments`` are the approved or the reviewer's modified ones; ``result`` is the
    reviewer's result when they took the action over."""

    id: int | None
    status: str
    reason: str = ""
    priority: str = ""
    escalation_id: int | None = None
    review_url: str | None = None
    arguments: dict | None = None
    result: Any = None
    comment: str = ""
    reviewer: str | None = None
    decided_at: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> bool:
        return self.status not in DECIDED_ACTION_STATUSES

    @classmethod
    def from_dict(cls, data: dict) -> ActionDecision:
        decision = data.get("decision") if isinstance(data.get("decision"), dict) else {}
        merged = {**decision, **{key: value for key, value in data.items() if value is not None}}
        return cls(
            id=data.get("id"),
            status=data.get("status", ""),
            reason=merged.get("reason") or "",
            priority=merged.get("priority") or "",
            escalation_id=merged.get("escalation_id"),
            review_url=merged.get("review_url"),
            arguments=merged.get("arguments"),
            result=merged.get("result"),
            comment=merged.get("comment") or "",
            reviewer=merged.get("reviewer"),
            decided_at=merged.get("decided_at"),
            raw=data,
        )


@dataclass
class BudgetRemaining:
    budget: Any
    scope: str = ""
    subject: str = ""
    period: str = ""
    period_end: str | None = None
    limit_tokens: int | None = None
    limit_usd: Decimal | None = None
    spent_tokens: int = 0
    spent_usd: Decimal = Decimal(0)
    reserved_tokens: int = 0
    reserved_usd: Decimal = Decimal(0)
    remaining_tokens: int | None = None
    remaining_usd: Decimal | None = None
    hard_stop: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> BudgetRemaining:
        return cls(
            budget=data.get("budget"),
            scope=data.get("scope", ""),
            subject=data.get("subject", ""),
            period=data.get("period", ""),
            period_end=data.get("period_end"),
            limit_tokens=data.get("limit_tokens"),
            limit_usd=_decimal(data.get("limit_usd")),
            spent_tokens=data.get("spent_tokens") or 0,
            spent_usd=_decimal(data.get("spent_usd")) or Decimal(0),
            reserved_tokens=data.get("reserved_tokens") or 0,
            reserved_usd=_decimal(data.get("reserved_usd")) or Decimal(0),
            remaining_tokens=data.get("remaining_tokens"),
            remaining_usd=_decimal(data.get("remaining_usd")),
            hard_stop=bool(data.get("hard_stop")),
            raw=data,
        )


def _remaining(data: dict) -> list[BudgetRemaining]:
    return [BudgetRemaining.from_dict(item) for item in data.get("remaining") or data.get("items") or []]


@dataclass
class Usage:
    """Recorded usage: from POST /usage (``id``) or from settling a reservation (``usage_id``)."""

    id: int | None
    cost_usd: Decimal
    remaining: list[BudgetRemaining] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> Usage:
        usage_id = data.get("id", data.get("usage_id"))
        return cls(
            id=usage_id, cost_usd=_decimal(data.get("cost_usd")) or Decimal(0), remaining=_remaining(data), raw=data
        )


@dataclass
class Reservation:
    """A budget reservation. ``id`` is None when no budget applies (nothing to settle or release).

    Inside ``with client.reservation(...) as r:`` set ``r.input_tokens`` / ``r.output_tokens`` (and
    ``cached_tokens``, ``model``) to what was really used; the block settles with them on exit, or
    releases the reservation if the block raised (or if nothing was set)."""

    id: int | None
    expires_at: str | None = None
    tokens: int = 0
    usd: Decimal = Decimal(0)
    note: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    model: str | None = None
    usage: Usage | None = None

    def use(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, model: str | None = None) -> None:
        self.input_tokens, self.output_tokens, self.cached_tokens, self.model = (
            input_tokens,
            output_tokens,
            cached_tokens,
            model,
        )

    @classmethod
    def from_dict(cls, data: dict) -> Reservation:
        return cls(
            id=data.get("id"),
            expires_at=data.get("expires_at"),
            tokens=data.get("tokens") or 0,
            usd=_decimal(data.get("usd")) or Decimal(0),
            note=data.get("note") or "",
            raw=data,
        )


def _released(data: dict) -> bool:
    return bool(data.get("released"))


def _budget_list(data: dict) -> list[BudgetRemaining]:
    return [BudgetRemaining.from_dict(item) for item in data.get("items", [])]


def _identity(data: Any) -> Any:
    return data


# ---------------------------------------------------------------------------------------------- requests


@dataclass
class _Call:
    method: str
    path: str
    parse: Callable[[Any], Any] = _identity
    params: dict | None = None
    json: Any = None
    headers: dict = field(default_factory=dict)
    safe_to_resend: bool = False  # may a connection error be retried?
    read_timeout: float | None = None  # for long-polls


def _clean(params: dict) -> dict:
    return {key: value for key, value in params.items() if value is not None}


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can carry it, else its repr (the reviewer still sees what it was)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(key): _jsonable(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(item) for item in value]
        return repr(value)


class _Base:
    """What the sync and async clients share: building requests, reading answers, deciding retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        long_poll_seconds: float = LONG_POLL_SECONDS,
        user_agent: str = "agentops-python-client/1",
    ):
        base_url = base_url.rstrip("/")
        if not base_url.endswith(API_PREFIX):
            base_url += API_PREFIX
        self.base_url, self.timeout, self.max_retries = base_url, float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max, self.max_retry_after = backoff_base, backoff_max, max_retry_after
        self.long_poll_seconds = long_poll_seconds  # at most the server's API_MAX_WAIT_SECONDS
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": user_agent, "Accept": "application/json"}

    # -- retry policy

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): Retry-After if given (capped), else
        exponential backoff with jitter."""
        if response is not None:
            hinted = _retry_after_seconds(response.headers.get("retry-after"))
            if hinted is not None:
                return min(hinted, self.max_retry_after) + random.uniform(0, 0.1)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _timeout_for(self, call: _Call) -> httpx.Timeout:
        read = max(self.timeout, (call.read_timeout or 0) + 10)
        return httpx.Timeout(self.timeout, read=read)

    def _request_kwargs(self, call: _Call) -> dict:
        return {
            "params": call.params or None,
            "json": call.json,
            "headers": call.headers or None,
            "timeout": self._timeout_for(call),
        }

    @staticmethod
    def _resendable(call: _Call, exc: httpx.TransportError) -> bool:
        # Nothing reached the server when the connection could not be made: any request may be resent.
        return (
            isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            or call.safe_to_resend
            or call.method in IDEMPOTENT_METHODS
        )

    @staticmethod
    def _result(call: _Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return call.parse({})
        return call.parse(response.json())

    # -- endpoints as request descriptions (each client method sends one of these)

    def _start_run(self, input, agent, session_id, idempotency_key) -> _Call:
        body = _clean({"agent": agent, "input": input if input is not None else {}, "session_id": session_id})
        # A key per call even if the caller gave none: a retry after a lost answer cannot start a second run.
        key = idempotency_key or f"client-{uuid.uuid4().hex}"
        return _Call("POST", "/runs", Run.from_dict, json=body, headers={"Idempotency-Key": key}, safe_to_resend=True)

    def _get_run(self, run_id: int, wait: float | None) -> _Call:
        params = _clean({"wait": wait if wait else None})
        return _Call("GET", f"/runs/{int(run_id)}", Run.from_dict, params=params, read_timeout=wait)

    def _cancel_run(self, run_id: int) -> _Call:
        return _Call("POST", f"/runs/{int(run_id)}/cancel", Run.from_dict)

    def _list_runs(self, status, limit, offset) -> _Call:
        params = _clean({"status": status, "limit": limit, "offset": offset})
        return _Call("GET", "/runs", RunList.from_dict, params=params)

    def _request_action(self, operation, arguments, session_id, confidence, value, retry_count, context) -> _Call:
        body = {
            "session_id": session_id,
            "operation": operation,
            "arguments": _jsonable(arguments or {}),
            "confidence": confidence,
            "value": value,
            "retry_count": retry_count,
            "context": context or {},
        }
        return _Call("POST", "/actions", ActionDecision.from_dict, json=body)

    def _get_action(self, action_id: int, wait: float | None) -> _Call:
        params = _clean({"wait": wait if wait else None})
        return _Call("GET", f"/actions/{int(action_id)}", ActionDecision.from_dict, params=params, read_timeout=wait)

    def _abandon_action(self, action_id: int, waited: float | None) -> _Call:
        params = _clean({"waited": waited})
        return _Call(
            "POST", f"/actions/{int(action_id)}/abandon", ActionDecision.from_dict, params=params, safe_to_resend=True
        )

    def _record_usage(self, model, operation, input_tokens, output_tokens, cached_tokens, session_id, run_id) -> _Call:
        body = {
            "session_id": session_id,
            "model": model,
            "operation": operation,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_tokens": cached_tokens,
            "run_id": run_id,
        }
        return _Call("POST", "/usage", Usage.from_dict, json=body)

    def _reserve(self, model, operation, estimated_input_tokens, estimated_output_tokens, session_id, lease) -> _Call:
        body = {
            "session_id": session_id,
            "model": model,
            "operation": operation,
            "estimated_input_tokens": estimated_input_tokens,
            "estimated_output_tokens": estimated_output_tokens,
            "lease_seconds": lease,
        }
        return _Call("POST", "/reservations", Reservation.from_dict, json=body)

    def _settle(self, reservation_id, input_tokens, output_tokens, cached_tokens, model) -> _Call:
        body = _clean(
            {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_tokens": cached_tokens,
                "model": model,
            }
        )
        # Settling twice returns the same usage (the server makes it idempotent), so resending is safe.
        return _Call(
            "POST", f"/reservations/{int(reservation_id)}/settle", Usage.from_dict, json=body, safe_to_resend=True
        )

    def _release(self, reservation_id) -> _Call:
        return _Call("POST", f"/reservations/{int(reservation_id)}/release", _released, safe_to_resend=True)

    def _budgets(self, session_id) -> _Call:
        return _Call("GET", "/budgets", _budget_list, params=_clean({"session_id": session_id or None}))

    # admin (scope "admin"): budgets and prices as code; answers are the server's JSON objects as dicts

    def _admin(self, method: str, path: str, body: Any = None) -> _Call:
        return _Call(method, f"/admin{path}", json=body)


# ---------------------------------------------------------------------------------------------- approval


def _bind(fn: Callable, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def _arguments_for_review(fn: Callable, bound: inspect.BoundArguments) -> dict:
    """The call's arguments by parameter name, JSON-able (``self``/``cls`` left out; ``**kwargs`` flattened)."""
    params = inspect.signature(fn).parameters
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = params[name].kind
        if name in ("self", "cls") and next(iter(params)) == name:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update({key: _jsonable(item) for key, item in value.items()})
        else:
            out[name] = _jsonable(list(value) if kind is inspect.Parameter.VAR_POSITIONAL else value)
    return out


def _merge(fn: Callable, bound: inspect.BoundArguments, changes: dict) -> tuple[tuple, dict]:
    """The call's args and kwargs with the reviewer's arguments merged over the originals by name."""
    params = inspect.signature(fn).parameters
    var_kw = next((name for name, p in params.items() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    arguments = dict(bound.arguments)
    for name, value in (changes or {}).items():
        param = params.get(name)
        if param is not None and param.kind is inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = tuple(value)
        elif param is not None and param.kind is not inspect.Parameter.VAR_KEYWORD:
            arguments[name] = value
        elif var_kw is not None:
            arguments[var_kw] = {**arguments.get(var_kw, {}), name: value}
        # an argument the function cannot take is ignored
    merged = inspect.BoundArguments(inspect.signature(fn), arguments)
    return merged.args, merged.kwargs


def _outcome(decision: ActionDecision) -> tuple[str, Any]:
    if decision.status in ("approved", "modified"):
        return "call", decision.arguments if decision.status == "modified" else None
    if decision.status == "taken_over":
        return "return", decision.result
    raise ActionRejected(decision)


def _value(spec: Any, bound: inspect.BoundArguments) -> Any:
    """``value`` / ``confidence`` may be a number, an argument's name, or a function of the bound arguments."""
    if callable(spec):
        return spec(**bound.arguments)
    if isinstance(spec, str):
        return bound.arguments.get(spec)
    return spec


def require_approval(
    operation: str,
    *,
    value: float | str | Callable | None = None,
    confidence: float | str | Callable | None = None,
    client: AgentOps | AsyncAgentOps | None = None,
    session_id: str = "",
    timeout: float = 600,
    context: dict | None = None,
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Ask permission before each call of the decorated function.

    On a call: POST /actions with the call's arguments (by parameter name), wait for the decision by
    long-polling, then call the function with the original arguments (approved), with the reviewer's
    arguments merged over them (modified), return the reviewer's result without calling (taken over), or
    raise ``ActionRejected`` (rejected, expired, or no decision within ``timeout`` seconds — the request is
    then closed on the server as expired, so no reviewer can approve a call that was never made).
    ``value`` / ``confidence`` are numbers, a parameter's name, or a callable getting the arguments. Async
    functions need an ``AsyncAgentOps`` client."""
    if client is None:
        raise TypeError("require_approval needs client=AgentOps(...) (or use @client.require_approval(...))")

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        if inspect.iscoroutinefunction(fn):
            if not isinstance(client, AsyncAgentOps):
                raise TypeError(f"{fn.__qualname__} is async: require_approval needs an AsyncAgentOps client")

            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                bound = _bind(fn, args, kwargs)
                decision = await client.request_action(
                    operation,
                    _arguments_for_review(fn, bound),
                    session_id=session_id,
                    confidence=_value(confidence, bound),
                    value=_value(value, bound),
                    context=context,
                )
                if decision.pending:
                    decision = await client.wait_for_decision(decision.id, timeout=timeout)
                what, data = _outcome(decision)
                if what == "return":
                    return data
                call_args, call_kwargs = _merge(fn, bound, data) if data else (bound.args, bound.kwargs)
                return await fn(*call_args, **call_kwargs)

            return async_wrapper

        if not isinstance(client, AgentOps):
            raise TypeError(f"{fn.__qualname__} is not async: require_approval needs an AgentOps client")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = _bind(fn, args, kwargs)
            decision = client.request_action(
                operation,
                _arguments_for_review(fn, bound),
                session_id=session_id,
                confidence=_value(confidence, bound),
                value=_value(value, bound),
                context=context,
            )
            if decision.pending:
                decision = client.wait_for_decision(decision.id, timeout=timeout)
            what, data = _outcome(decision)
            if what == "return":
                return data
            call_args, call_kwargs = _merge(fn, bound, data) if data else (bound.args, bound.kwargs)
            return fn(*call_args, **call_kwargs)

        return wrapper

    return decorate


# ---------------------------------------------------------------------------------------------- sync client


class AgentOps(_Base):
    """Synchronous client. Use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30, max_retries: int = 3, **options):
        transport = options.pop("transport", None)
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, **options)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, transport=transport)
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> AgentOps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(call.method, call.path, **self._request_kwargs(call))
            except httpx.TransportError as exc:
                if attempt > self.max_retries or not self._resendable(call, exc):
                    raise
                self._sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt <= self.max_retries:
                self._sleep(self._delay(attempt, response))
                continue
            return self._result(call, response)

    # runs

    def start_run(
        self,
        agent: str | None = None,
        input: dict | None = None,
        session_id: str = "",
        idempotency_key: str | None = None,
    ) -> Run:
        """Start a run of ``agent`` (default: the key's agent). The same ``idempotency_key`` gives the same run."""
        return self._send(self._start_run(input, agent, session_id, idempotency_key))

    def get_run(self, run_id: int, wait: float | None = None) -> Run:
        """The run; with ``wait`` seconds, answers as soon as its status changes (long-poll)."""
        return self._send(self._get_run(run_id, wait))

    def wait_for_run(self, run_id: int, timeout: float = 300) -> Run:
        """Long-poll until the run finishes (succeeded, failed, cancelled) or ``timeout`` passes; the last run."""
        deadline = time.monotonic() + timeout
        run = self.get_run(run_id)
        while not run.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return run
            run = self.get_run(run_id, wait=max(1, min(self.long_poll_seconds, round(left))))
        return run

    def cancel_run(self, run_id: int) -> Run:
        return self._send(self._cancel_run(run_id))

    def list_runs(self, status: str | None = None, limit: int = 20, offset: int = 0) -> RunList:
        return self._send(self._list_runs(status, limit, offset))

    # actions

    def request_action(
        self,
        operation: str,
        arguments: dict | None = None,
        *,
        session_id: str = "",
        confidence: float | None = None,
        value: float | None = None,
        retry_count: int = 0,
        context: dict | None = None,
    ) -> ActionDecision:
        """Ask permission: ``approved`` or ``rejected`` at once, or ``pending`` (a reviewer decides)."""
        call = self._request_action(operation, arguments, session_id, confidence, value, retry_count, context)
        return self._send(call)

    def get_action(self, action_id: int, wait: float | None = None) -> ActionDecision:
        return self._send(self._get_action(action_id, wait))

    def abandon_action(self, action_id: int, waited: float | None = None) -> ActionDecision:
        """Stop waiting: a pending request is closed at once (``expired``); a decided one is returned."""
        return self._send(self._abandon_action(action_id, waited))

    def wait_for_decision(self, action_id: int, timeout: float = 600) -> ActionDecision:
        """Long-poll until the action is decided. After ``timeout`` the request is abandoned — closed on the
        server, so no reviewer decides what this caller no longer waits for — and comes back ``expired``
        (or with the decision that came just in time)."""
        deadline = time.monotonic() + timeout
        decision = self.get_action(action_id)
        while decision.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.abandon_action(action_id, waited=timeout)
            decision = self.get_action(action_id, wait=max(1, min(self.long_poll_seconds, round(left))))
        return decision

    def require_approval(self, operation: str, **options) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """``@client.require_approval("send_refund", value="amount")``; see the module-level function."""
        return require_approval(operation, client=self, **options)

    # usage, reservations, budgets

    def record_usage(
        self,
        model: str,
        operation: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        session_id: str = "",
        run_id: int | None = None,
    ) -> Usage:
        call = self._record_usage(model, operation, input_tokens, output_tokens, cached_tokens, session_id, run_id)
        return self._send(call)

    def reserve(
        self,
        model: str,
        operation: str,
        estimated_input_tokens: int,
        estimated_output_tokens: int,
        *,
        session_id: str = "",
        lease_seconds: int | None = None,
    ) -> Reservation:
        """Reserve budget before a call; raises BudgetExceeded (402) when a hard budget would be overrun."""
        call = self._reserve(
            model, operation, estimated_input_tokens, estimated_output_tokens, session_id, lease_seconds
        )
        return self._send(call)

    def settle(
        self,
        reservation_id: int,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        model: str | None = None,
    ) -> Usage:
        return self._send(self._settle(reservation_id, input_tokens, output_tokens, cached_tokens, model))

    def release(self, reservation_id: int) -> bool:
        return self._send(self._release(reservation_id))

    @contextlib.contextmanager
    def reservation(
        self,
        model: str,
        operation: str,
        estimated_input_tokens: int,
        estimated_output_tokens: int,
        *,
        session_id: str = "",
        lease_seconds: int | None = None,
    ) -> Iterator[Reservation]:
        """Reserve; the block sets ``r.use(input_tokens, output_tokens)``; settle on exit, release on error."""
        reserved = self.reserve(
            model,
            operation,
            estimated_input_tokens,
            estimated_output_tokens,
            session_id=session_id,
            lease_seconds=lease_seconds,
        )
        try:
            yield reserved
        except BaseException:
            if reserved.id is not None:
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    self.release(reserved.id)
            raise
        if reserved.id is None:
            if reserved.input_tokens is not None:  # no budget applies: still record what was used
                reserved.usage = self.record_usage(
                    reserved.model or model,
                    operation,
                    reserved.input_tokens,
                    reserved.output_tokens or 0,
                    cached_tokens=reserved.cached_tokens,
                    session_id=session_id,
                )
        elif reserved.input_tokens is None:
            self.release(reserved.id)
        else:
            reserved.usage = self.settle(
                reserved.id,
                reserved.input_tokens,
                reserved.output_tokens or 0,
                cached_tokens=reserved.cached_tokens,
                model=reserved.model,
            )

    def budgets(self, session_id: str | None = None) -> list[BudgetRemaining]:
        return self._send(self._budgets(session_id))

    # admin (scope "admin"): budgets and prices as code

    def list_budgets_admin(self) -> Any:
        return self._send(self._admin("GET", "/budgets"))

    def get_budget(self, budget_id: int) -> dict:
        return self._send(self._admin("GET", f"/budgets/{int(budget_id)}"))

    def create_budget(self, **fields: Any) -> dict:
        return self._send(self._admin("POST", "/budgets", fields))

    def update_budget(self, budget_id: int, **fields: Any) -> dict:
        return self._send(self._admin("PUT", f"/budgets/{int(budget_id)}", fields))

    def delete_budget(self, budget_id: int) -> Any:
        return self._send(self._admin("DELETE", f"/budgets/{int(budget_id)}"))

    def list_prices(self) -> Any:
        return self._send(self._admin("GET", "/prices"))

    def set_price(self, **fields: Any) -> dict:
        return self._send(self._admin("POST", "/prices", fields))

    def delete_price(self, price_id: int) -> Any:
        return self._send(self._admin("DELETE", f"/prices/{int(price_id)}"))


# ---------------------------------------------------------------------------------------------- async client


class AsyncAgentOps(_Base):
    """The same API with ``await``. Use ``async with AsyncAgentOps(...) as ops:`` or ``await ops.aclose()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30, max_retries: int = 3, **options):
        transport = options.pop("transport", None)
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, transport=transport)
        self._sleep: Callable[[float], Any] = asyncio.sleep

    async def __aenter__(self) -> AsyncAgentOps:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(call.method, call.path, **self._request_kwargs(call))
            except httpx.TransportError as exc:
                if attempt > self.max_retries or not self._resendable(call, exc):
                    raise
                await self._sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt <= self.max_retries:
                await self._sleep(self._delay(attempt, response))
                continue
            return self._result(call, response)

    # runs

    async def start_run(
        self,
        agent: str | None = None,
        input: dict | None = None,
        session_id: str = "",
        idempotency_key: str | None = None,
    ) -> Run:
        return await self._send(self._start_run(input, agent, session_id, idempotency_key))

    async def get_run(self, run_id: int, wait: float | None = None) -> Run:
        return await self._send(self._get_run(run_id, wait))

    async def wait_for_run(self, run_id: int, timeout: float = 300) -> Run:
        deadline = time.monotonic() + timeout
        run = await self.get_run(run_id)
        while not run.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return run
            run = await self.get_run(run_id, wait=max(1, min(self.long_poll_seconds, round(left))))
        return run

    async def cancel_run(self, run_id: int) -> Run:
        return await self._send(self._cancel_run(run_id))

    async def list_runs(self, status: str | None = None, limit: int = 20, offset: int = 0) -> RunList:
        return await self._send(self._list_runs(status, limit, offset))

    # actions

    async def request_action(
        self,
        operation: str,
        arguments: dict | None = None,
        *,
        session_id: str = "",
        confidence: float | None = None,
        value: float | None = None,
        retry_count: int = 0,
        context: dict | None = None,
    ) -> ActionDecision:
        call = self._request_action(operation, arguments, session_id, confidence, value, retry_count, context)
        return await self._send(call)

    async def get_action(self, action_id: int, wait: float | None = None) -> ActionDecision:
        return await self._send(self._get_action(action_id, wait))

    async def abandon_action(self, action_id: int, waited: float | None = None) -> ActionDecision:
        return await self._send(self._abandon_action(action_id, waited))

    async def wait_for_decision(self, action_id: int, timeout: float = 600) -> ActionDecision:
        deadline = time.monotonic() + timeout
        decision = await self.get_action(action_id)
        while decision.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return await self.abandon_action(action_id, waited=timeout)
            decision = await self.get_action(action_id, wait=max(1, min(self.long_poll_seconds, round(left))))
        return decision

    def require_approval(self, operation: str, **options) -> Callable[[Callable[..., T]], Callable[..., T]]:
        return require_approval(operation, client=self, **options)

    # usage, reservations, budgets

    async def record_usage(
        self,
        model: str,
        operation: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        session_id: str = "",
        run_id: int | None = None,
    ) -> Usage:
        call = self._record_usage(model, operation, input_tokens, output_tokens, cached_tokens, session_id, run_id)
        return await self._send(call)

    async def reserve(
        self,
        model: str,
        operation: str,
        estimated_input_tokens: int,
        estimated_output_tokens: int,
        *,
        session_id: str = "",
        lease_seconds: int | None = None,
    ) -> Reservation:
        call = self._reserve(
            model, operation, estimated_input_tokens, estimated_output_tokens, session_id, lease_seconds
        )
        return await self._send(call)

    async def settle(
        self,
        reservation_id: int,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        model: str | None = None,
    ) -> Usage:
        return await self._send(self._settle(reservation_id, input_tokens, output_tokens, cached_tokens, model))

    async def release(self, reservation_id: int) -> bool:
        return await self._send(self._release(reservation_id))

    @contextlib.asynccontextmanager
    async def reservation(
        self,
        model: str,
        operation: str,
        estimated_input_tokens: int,
        estimated_output_tokens: int,
        *,
        session_id: str = "",
        lease_seconds: int | None = None,
    ):
        reserved = await self.reserve(
            model,
            operation,
            estimated_input_tokens,
            estimated_output_tokens,
            session_id=session_id,
            lease_seconds=lease_seconds,
        )
        try:
            yield reserved
        except BaseException:
            if reserved.id is not None:
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    await self.release(reserved.id)
            raise
        if reserved.id is None:
            if reserved.input_tokens is not None:
                reserved.usage = await self.record_usage(
                    reserved.model or model,
                    operation,
                    reserved.input_tokens,
                    reserved.output_tokens or 0,
                    cached_tokens=reserved.cached_tokens,
                    session_id=session_id,
                )
        elif reserved.input_tokens is None:
            await self.release(reserved.id)
        else:
            reserved.usage = await self.settle(
                reserved.id,
                reserved.input_tokens,
                reserved.output_tokens or 0,
                cached_tokens=reserved.cached_tokens,
                model=reserved.model,
            )

    async def budgets(self, session_id: str | None = None) -> list[BudgetRemaining]:
        return await self._send(self._budgets(session_id))

    # admin

    async def list_budgets_admin(self) -> Any:
        return await self._send(self._admin("GET", "/budgets"))

    async def get_budget(self, budget_id: int) -> dict:
        return await self._send(self._admin("GET", f"/budgets/{int(budget_id)}"))

    async def create_budget(self, **fields: Any) -> dict:
        return await self._send(self._admin("POST", "/budgets", fields))

    async def update_budget(self, budget_id: int, **fields: Any) -> dict:
        return await self._send(self._admin("PUT", f"/budgets/{int(budget_id)}", fields))

    async def delete_budget(self, budget_id: int) -> Any:
        return await self._send(self._admin("DELETE", f"/budgets/{int(budget_id)}"))

    async def list_prices(self) -> Any:
        return await self._send(self._admin("GET", "/prices"))

    async def set_price(self, **fields: Any) -> dict:
        return await self._send(self._admin("POST", "/prices", fields))

    async def delete_price(self, price_id: int) -> Any:
        return await self._send(self._admin("DELETE", f"/prices/{int(price_id)}"))
