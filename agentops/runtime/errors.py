"""One error taxonomy for every provider failure, and the classifier that maps real failures onto it.

Two axes:

* ``ErrorCategory`` — *where* the failure lives: system failures (``network``, ``resource``,
  ``dependency``) are about the plumbing and usually pass; business failures (``input``, ``logic``,
  ``data``) are about what was asked or answered and do not pass by asking again.
* ``ErrorClass`` — *what* happened, the label used by retry policies, metrics and logs. Each class is
  transient (worth retrying) or permanent.

``classify(exc)`` turns whatever a provider raised — an ``openai`` SDK exception, an ``httpx`` error, a raw
HTTP status, a truncated JSON body, our own ``TimeoutExceeded`` — into a ``ProviderError`` carrying the class,
whether it is transient, the category, ``Retry-After`` when the server sent one, and the HTTP status.

``classify_any(exc)`` classifies *any* failure — a provider's, a tool's raised inside a run, the run's own —
into a ``Classified`` (class, category, system/business kind, transient, reason): what retry policies, the
run timeline, escalations, metrics labels and log fields read. Resource exhaustion (``MemoryError``, an
``OSError`` with ``ENOSPC`` / ``EMFILE`` / ``ENFILE`` / ``ENOMEM``) is a transient ``ResourceExhausted``;
an exception a tool or agent raised that nothing else explains is a permanent ``LogicError``.
"""

from __future__ import annotations

import email.utils
import errno
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import openai

from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from agentops.runtime.timeouts import TimeoutExceeded


class ErrorCategory(StrEnum):
    """Where a failure lives. ``kind`` groups the categories into ``system`` and ``business``."""

    NETWORK = "network"
    RESOURCE = "resource"
    DEPENDENCY = "dependency"
    INPUT = "input"
    LOGIC = "logic"
    DATA = "data"

    @property
    def kind(self) -> str:
        return "system" if self in _SYSTEM else "business"


_SYSTEM = frozenset({ErrorCategory.NETWORK, ErrorCategory.RESOURCE, ErrorCategory.DEPENDENCY})


class ErrorClass(StrEnum):
    """What went wrong; the values are the labels used by metrics, logs and admin-editable retry policies."""

    CONNECTION = "ConnectionError"
    TIMEOUT = "Timeout"
    RATE_LIMIT = "RateLimitError"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    AUTHENTICATION = "AuthenticationError"
    BAD_REQUEST = "BadRequest"
    INVALID_RESPONSE = "InvalidResponse"
    RESOURCE_EXHAUSTED = "ResourceExhausted"  # memory, disk, file descriptors
    REJECTED_ANSWER = "RejectedAnswer"  # an answer validation refused (empty, too short, a refusal)
    LOGIC_ERROR = "LogicError"  # an exception a tool or the agent raised that no other class explains
    BUDGET_EXCEEDED = "BudgetExceeded"  # a budget refused the call before it was made

    @property
    def transient(self) -> bool:
        return _TRANSIENT[self]

    @property
    def category(self) -> ErrorCategory:
        return _CATEGORY[self]


_TRANSIENT = {
    ErrorClass.CONNECTION: True,
    ErrorClass.TIMEOUT: True,
    ErrorClass.RATE_LIMIT: True,
    ErrorClass.SERVICE_UNAVAILABLE: True,
    ErrorClass.INVALID_RESPONSE: True,  # a malformed body; validation failures override this per instance
    ErrorClass.RESOURCE_EXHAUSTED: True,
    ErrorClass.AUTHENTICATION: False,
    ErrorClass.BAD_REQUEST: False,
    ErrorClass.REJECTED_ANSWER: False,
    ErrorClass.LOGIC_ERROR: False,
    ErrorClass.BUDGET_EXCEEDED: False,
}

_CATEGORY = {
    ErrorClass.CONNECTION: ErrorCategory.NETWORK,
    ErrorClass.TIMEOUT: ErrorCategory.NETWORK,
    ErrorClass.RATE_LIMIT: ErrorCategory.RESOURCE,
    ErrorClass.SERVICE_UNAVAILABLE: ErrorCategory.DEPENDENCY,
    ErrorClass.AUTHENTICATION: ErrorCategory.INPUT,
    ErrorClass.BAD_REQUEST: ErrorCategory.INPUT,
    ErrorClass.INVALID_RESPONSE: ErrorCategory.DATA,
    ErrorClass.RESOURCE_EXHAUSTED: ErrorCategory.RESOURCE,
    ErrorClass.REJECTED_ANSWER: ErrorCategory.LOGIC,
    ErrorClass.LOGIC_ERROR: ErrorCategory.LOGIC,
    ErrorClass.BUDGET_EXCEEDED: ErrorCategory.RESOURCE,
}


class RefusedDestination(Exception):
    """An outbound request refused before it left (its address is not one requests may reach): permanent,
    asking again gives the same answer. The Django side's address guard raises a subclass."""


class ProviderError(Exception):
    """A classified provider failure.

    ``transient`` defaults to the class's nature but can be set per instance: a malformed body is a
    transient ``InvalidResponse`` (ask again), a refusal caught by validation is a permanent one (ask
    someone else). ``reason`` is a short machine label (``"malformed"``, ``"empty"``, ``"refusal"``, ...).
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str = "",
        *,
        transient: bool | None = None,
        category: ErrorCategory | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message or error_class.value)
        self.error_class = error_class
        self.message = message or error_class.value
        self.transient = error_class.transient if transient is None else transient
        self.category = category or error_class.category
        self.retry_after = retry_after
        self.status = status
        self.provider = provider
        self.model = model
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.error_class.value}, {self.message!r}, transient={self.transient}, "
            f"status={self.status}, retry_after={self.retry_after}, reason={self.reason})"
        )

    def for_target(self, provider: str | None, model: str | None) -> ProviderError:
        """Fill in provider/model when the raiser did not know them; returns self."""
        if self.provider is None:
            self.provider = provider
        if self.model is None:
            self.model = model
        return self


class NoRuleMatched(Exception):
    """The rule engine had no rule for this request: not a failure, the chain simply moves on."""

    reason = "no_rule"


class FallbackExhausted(Exception):
    """Every handler of the chain failed and no human handoff was available (or it failed too)."""

    def __init__(self, message: str, *, hops: list | None = None, last_error: BaseException | None = None):
        super().__init__(message)
        self.hops = hops or []
        self.last_error = last_error


# --- classification ----------------------------------------------------------------------------


def error_class_for_status(status: int) -> ErrorClass:
    """The class of an HTTP error status (4xx/5xx)."""
    if status == 429:
        return ErrorClass.RATE_LIMIT
    if status in (401, 403, 407):
        return ErrorClass.AUTHENTICATION
    if status == 408:
        return ErrorClass.TIMEOUT
    # 409 (conflict / lock) and 425 (too early) are worth asking again, like the openai SDK does.
    if status >= 500 or status in (409, 425):
        return ErrorClass.SERVICE_UNAVAILABLE
    return ErrorClass.BAD_REQUEST


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (delta seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except (TypeError, ValueError):
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) if response is not None else None


def from_status(
    status: int,
    message: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> ProviderError:
    """A ``ProviderError`` for a raw HTTP error status (with ``Retry-After`` read from ``headers``)."""
    return ProviderError(
        error_class_for_status(status),
        message or f"HTTP {status}",
        status=status,
        retry_after=parse_retry_after(headers),
        provider=provider,
        model=model,
        reason=f"http_{status}",
    )


def _load_optional() -> tuple[tuple[type, ...], ...]:
    """Exception types from optional libraries, resolved once: (timeouts, transport, status, ours)."""
    timeouts: list[type] = []
    transport: list[type] = []
    status: list[type] = []
    decoding: list[type] = []
    ours: list[type] = []
    # The openai SDK runs on httpx2 (a fork with the same names); callers may use plain httpx too.
    for name in ("httpx", "httpx2"):
        try:
            mod = __import__(name)
        except ImportError:  # pragma: no cover - both are installed with the project
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
        status.append(mod.HTTPStatusError)
        decoding.append(mod.DecodingError)
    ours.append(TimeoutExceeded)
    return tuple(timeouts), tuple(transport), tuple(status), tuple(decoding), tuple(ours)


_OPTIONAL: tuple[tuple[type, ...], ...] | None = None


def classify(exc: BaseException | int, *, provider: str | None = None, model: str | None = None) -> ProviderError:
    """Map a failure (exception or raw HTTP status) onto a ``ProviderError``.

    Unknown exceptions become a *permanent* ``ServiceUnavailable`` (reason ``"unexpected"``): the chain
    moves on to the next handler instead of retrying something nobody understands, and the original
    exception stays reachable as ``__cause__`` of the raised error.
    """
    if isinstance(exc, ProviderError):
        return exc.for_target(provider, model)
    if isinstance(exc, int):
        return from_status(exc, provider=provider, model=model)
    known = _classify_known(exc, provider=provider, model=model)
    if known is not None:
        return known
    err = ProviderError(
        ErrorClass.SERVICE_UNAVAILABLE,
        str(exc) or type(exc).__name__,
        transient=False,
        provider=provider,
        model=model,
        reason="unexpected",
    )
    err.__cause__ = exc
    return err


RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT})


def _resource_reason(exc: BaseException) -> str | None:
    """``"memory"``, ``"enospc"`` … when ``exc`` (or what it wraps) is the machine running out of something."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, MemoryError):
            return "memory"
        if isinstance(candidate, OSError) and candidate.errno in RESOURCE_ERRNOS:
            return errno.errorcode.get(candidate.errno, "resource").lower()
    return None


def _classify_known(
    exc: BaseException, *, provider: str | None = None, model: str | None = None
) -> ProviderError | None:
    """The ``ProviderError`` of a failure of a kind we know (a library's, the standard library's, ours), else
    None."""
    global _OPTIONAL

    def make(error_class: ErrorClass, **kw: Any) -> ProviderError:
        err = ProviderError(error_class, str(exc) or type(exc).__name__, provider=provider, model=model, **kw)
        err.__cause__ = exc
        return err

    resource = _resource_reason(exc)
    if resource is not None:
        return make(ErrorClass.RESOURCE_EXHAUSTED, reason=resource)

    # The address guard refused the request before it left (raised as is, or wrapped by the SDK): never retried.
    if isinstance(exc, RefusedDestination) or isinstance(exc.__cause__, RefusedDestination):
        return make(ErrorClass.CONNECTION, transient=False, reason="refused_address")
    # openai SDK — order matters: APITimeoutError is an APIConnectionError, RateLimitError an APIStatusError.
    if isinstance(exc, openai.APITimeoutError):
        return make(ErrorClass.TIMEOUT, reason="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return make(ErrorClass.CONNECTION, reason="connection")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return make(
            error_class_for_status(status),
            status=status,
            retry_after=parse_retry_after(_headers_of(exc)),
            reason=f"http_{status}",
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return make(ErrorClass.INVALID_RESPONSE, status=exc.status_code, reason="malformed")
    if isinstance(exc, json.JSONDecodeError):  # the SDK lets a truncated body through as a plain one
        return make(ErrorClass.INVALID_RESPONSE, reason="malformed")

    if _OPTIONAL is None:
        _OPTIONAL = _load_optional()
    timeouts, transport, status_errors, decoding, ours = _OPTIONAL
    if ours and isinstance(exc, ours):
        return make(ErrorClass.TIMEOUT, reason=f"timeout_{getattr(exc, 'layer', 'llm')}")
    if isinstance(exc, timeouts):
        return make(ErrorClass.TIMEOUT, reason="timeout")
    if isinstance(exc, decoding):
        return make(ErrorClass.INVALID_RESPONSE, reason="malformed")
    if isinstance(exc, transport):
        return make(ErrorClass.CONNECTION, reason="connection")
    if isinstance(exc, status_errors):
        code = exc.response.status_code
        return make(
            error_class_for_status(code),
            status=code,
            retry_after=parse_retry_after(exc.response.headers),
            reason=f"http_{code}",
        )

    # The standard library's own failures (sockets used directly, a provider of ours).
    if isinstance(exc, TimeoutError):
        return make(ErrorClass.TIMEOUT, reason="timeout")
    if isinstance(exc, ConnectionError):
        return make(ErrorClass.CONNECTION, reason="connection")
    return None


# --- every error: the classification the rest of the system reads ----------------------------------
@dataclass(frozen=True)
class Classified:
    """Any failure on the taxonomy: its class (the retry policy's key, the metrics label), its category and
    whether retrying may help. ``reason`` narrows it down (``enospc``, ``refusal``, ``http_503``, the
    exception type of a ``LogicError`` …)."""

    error_class: ErrorClass
    category: ErrorCategory
    transient: bool
    reason: str | None = None

    @property
    def kind(self) -> str:
        """``system`` or ``business``."""
        return self.category.kind

    def log_fields(self) -> dict[str, str]:
        """The structlog fields every failure's log line carries."""
        return {"error_class": self.error_class.value, "error_category": self.category.value}

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.error_class.value,
            "category": self.category.value,
            "kind": self.kind,
            "transient": self.transient,
            "reason": self.reason,
        }

    @classmethod
    def of(cls, error_class: ErrorClass, reason: str | None = None, *, transient: bool | None = None) -> Classified:
        return cls(error_class, error_class.category, error_class.transient if transient is None else transient, reason)


# Failures of the run machinery itself, by exception name (those classes live above this module) and as the
# names a failed run records.
_NAMED: dict[str, tuple[ErrorClass, str]] = {
    "RequestTimeout": (ErrorClass.TIMEOUT, "request_timeout"),
    "PhaseTimeout": (ErrorClass.TIMEOUT, "phase_timeout"),
    "SoftTimeLimitExceeded": (ErrorClass.TIMEOUT, "worker_time_limit"),
    "AllFallbacksFailed": (ErrorClass.SERVICE_UNAVAILABLE, "all_fallbacks_failed"),
    "BudgetUnavailable": (ErrorClass.SERVICE_UNAVAILABLE, "budget_unavailable"),
    "ToolRejected": (ErrorClass.LOGIC_ERROR, "rejected_by_reviewer"),
    "HumanRejected": (ErrorClass.LOGIC_ERROR, "rejected_by_reviewer"),
    "NondeterminismError": (ErrorClass.LOGIC_ERROR, "nondeterministic_agent"),
    "AgentLoadError": (ErrorClass.LOGIC_ERROR, "agent_load_error"),
    "UnknownAgent": (ErrorClass.LOGIC_ERROR, "unknown_agent"),
    "AgentDisabled": (ErrorClass.LOGIC_ERROR, "agent_disabled"),
}


def classify_any(exc: BaseException) -> Classified:
    """Classify any failure: a provider's, a tool's inside a run, the run's own. Never raises."""
    if isinstance(exc, ProviderError):
        return Classified(exc.error_class, exc.category, exc.transient, exc.reason)
    if isinstance(exc, FallbackExhausted):
        if isinstance(exc.last_error, ProviderError):
            return classify_any(exc.last_error)
        return from_hops([h.to_dict() if hasattr(h, "to_dict") else h for h in exc.hops]) or Classified.of(
            ErrorClass.SERVICE_UNAVAILABLE, "all_fallbacks_failed", transient=False
        )
    if isinstance(exc, BudgetExceeded):
        return Classified.of(ErrorClass.BUDGET_EXCEEDED, "budget_exceeded")
    if isinstance(exc, BudgetUnavailable):
        return Classified.of(ErrorClass.SERVICE_UNAVAILABLE, "budget_unavailable")
    named = _NAMED.get(type(exc).__name__)
    if named is not None:
        return Classified.of(named[0], named[1], transient=False)
    try:
        known = _classify_known(exc)
    except Exception:  # pragma: no cover - a classifier must never be the failure
        known = None
    if known is not None:
        return Classified(known.error_class, known.category, known.transient, known.reason)
    return Classified.of(ErrorClass.LOGIC_ERROR, type(exc).__name__)


def describe(name: str | None) -> Classified | None:
    """The classification of an error class *name* as steps and runs record it (an ``ErrorClass`` value or the
    name of a run-machinery failure); None for a name the taxonomy does not know (rows older than it)."""
    if not name:
        return None
    try:
        return Classified.of(ErrorClass(name))
    except ValueError:
        pass
    named = _NAMED.get(name)
    return Classified.of(named[0], named[1], transient=False) if named else None


def from_hops(hops: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...] | None) -> Classified | None:
    """Why a fallback chain did not answer, from its recorded hops (``Hop.to_dict()``): the last handler's
    error class; an open breaker (dependency) or the request deadline (timeout) when no handler raised."""
    last = None
    for hop in hops or ():
        if hop.get("error_class"):
            last = hop
    if last is not None:
        found = describe(last["error_class"])
        if found is not None:
            return Classified(found.error_class, found.category, found.transient, last.get("reason") or found.reason)
    outcomes = {hop.get("outcome") for hop in hops or ()}
    if "breaker_open" in outcomes:
        return Classified.of(ErrorClass.SERVICE_UNAVAILABLE, "breaker_open")
    if "deadline" in outcomes:
        return Classified.of(ErrorClass.TIMEOUT, "request_deadline")
    return None
