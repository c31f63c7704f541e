"""The error taxonomy and the classifier: real SDK / httpx exceptions in, one ProviderError out."""

from __future__ import annotations

import email.utils
import errno
import json
import time

import httpx
import httpx2
import openai
import pytest

from agentops.runtime.errors import (
    Classified,
    ErrorCategory,
    ErrorClass,
    FallbackExhausted,
    ProviderError,
    classify,
    classify_any,
    describe,
    error_class_for_status,
    from_hops,
    from_status,
    parse_retry_after,
)
from agentops.runtime.fallback import Hop
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from agentops.runtime.timeouts import TimeoutExceeded
from agentops.runtime.validation import ValidationSettings, validate_text

URL = "http://provider.test/v1/chat/completions"


def sdk_status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The exception the openai SDK raises for ``status`` (built the way the SDK builds it)."""
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, headers=headers or {}, request=request, json={"error": {"message": "x"}})
    client = openai.OpenAI(api_key="x", base_url="http://provider.test/v1", max_retries=0)
    return client._make_status_error_from_response(response)


def test_classes_have_the_documented_nature():
    transient = {c for c in ErrorClass if c.transient}
    assert transient == {
        ErrorClass.CONNECTION,
        ErrorClass.TIMEOUT,
        ErrorClass.RATE_LIMIT,
        ErrorClass.SERVICE_UNAVAILABLE,
        ErrorClass.INVALID_RESPONSE,
        ErrorClass.RESOURCE_EXHAUSTED,
    }
    assert [c.value for c in ErrorClass] == [
        "ConnectionError",
        "Timeout",
        "RateLimitError",
        "ServiceUnavailable",
        "AuthenticationError",
        "BadRequest",
        "InvalidResponse",
        "ResourceExhausted",
        "RejectedAnswer",
        "LogicError",
        "BudgetExceeded",
    ]
    assert {
        c.category.kind for c in (ErrorClass.CONNECTION, ErrorClass.RATE_LIMIT, ErrorClass.SERVICE_UNAVAILABLE)
    } == {"system"}
    assert ErrorClass.BAD_REQUEST.category is ErrorCategory.INPUT
    assert ErrorClass.INVALID_RESPONSE.category is ErrorCategory.DATA
    assert {c.kind for c in ErrorCategory} == {"system", "business"}


@pytest.mark.parametrize(
    ("status", "expected", "transient"),
    [
        (429, ErrorClass.RATE_LIMIT, True),
        (500, ErrorClass.SERVICE_UNAVAILABLE, True),
        (502, ErrorClass.SERVICE_UNAVAILABLE, True),
        (503, ErrorClass.SERVICE_UNAVAILABLE, True),
        (504, ErrorClass.SERVICE_UNAVAILABLE, True),
        (401, ErrorClass.AUTHENTICATION, False),
        (403, ErrorClass.AUTHENTICATION, False),
        (400, ErrorClass.BAD_REQUEST, False),
        (404, ErrorClass.BAD_REQUEST, False),
        (422, ErrorClass.BAD_REQUEST, False),
    ],
)
def test_sdk_status_errors(status, expected, transient):
    exc = sdk_status_error(status)
    err = classify(exc, provider="p", model="m")
    assert (err.error_class, err.transient, err.status) == (expected, transient, status)
    assert (err.provider, err.model) == ("p", "m")
    assert err.__cause__ is exc


def test_rate_limit_reads_retry_after_from_the_response_headers():
    err = classify(sdk_status_error(429, {"retry-after": "7"}))
    assert isinstance(sdk_status_error(429), openai.RateLimitError)
    assert err.error_class is ErrorClass.RATE_LIMIT
    assert err.retry_after == 7.0
    assert classify(sdk_status_error(429, {"retry-after-ms": "1500"})).retry_after == 1.5
    assert classify(sdk_status_error(429)).retry_after is None


def test_connection_timeout_and_malformed_bodies():
    request = httpx2.Request("POST", URL)
    assert classify(openai.APIConnectionError(request=request)).error_class is ErrorClass.CONNECTION
    assert classify(openai.APITimeoutError(request=request)).error_class is ErrorClass.TIMEOUT
    try:
        json.loads('{"id": "chatcmpl-1", "choi')
    except json.JSONDecodeError as exc:  # what the SDK lets through for a truncated body
        err = classify(exc)
    assert (err.error_class, err.transient, err.reason) == (ErrorClass.INVALID_RESPONSE, True, "malformed")
    response = httpx2.Response(200, request=request, text="{}")
    err = classify(openai.APIResponseValidationError(response, body={}))
    assert (err.error_class, err.transient) == (ErrorClass.INVALID_RESPONSE, True)


@pytest.mark.parametrize("lib", [httpx, httpx2])
def test_httpx_errors(lib):
    request = lib.Request("POST", URL)
    assert classify(lib.ConnectError("refused", request=request)).error_class is ErrorClass.CONNECTION
    assert classify(lib.RemoteProtocolError("reset", request=request)).error_class is ErrorClass.CONNECTION
    assert classify(lib.ReadTimeout("slow", request=request)).error_class is ErrorClass.TIMEOUT
    assert classify(lib.ConnectTimeout("slow", request=request)).error_class is ErrorClass.TIMEOUT
    response = lib.Response(503, request=request, headers={"Retry-After": "3"})
    err = classify(lib.HTTPStatusError("503", request=request, response=response))
    assert (err.error_class, err.status, err.retry_after) == (ErrorClass.SERVICE_UNAVAILABLE, 503, 3.0)


def test_raw_status_our_timeouts_and_the_standard_library():
    assert classify(503).error_class is ErrorClass.SERVICE_UNAVAILABLE
    assert classify(401).transient is False
    assert from_status(429, headers={"retry-after": "2"}).retry_after == 2.0
    err = classify(TimeoutExceeded("llm", 30))
    assert (err.error_class, err.reason) == (ErrorClass.TIMEOUT, "timeout_llm")
    assert classify(TimeoutError()).error_class is ErrorClass.TIMEOUT
    assert classify(ConnectionResetError()).error_class is ErrorClass.CONNECTION


def test_an_unknown_failure_is_permanent_so_the_chain_moves_on():
    err = classify(RuntimeError("weird"))
    assert (err.error_class, err.transient, err.reason) == (ErrorClass.SERVICE_UNAVAILABLE, False, "unexpected")


def test_a_provider_error_passes_through_and_gets_its_target():
    original = ProviderError(ErrorClass.TIMEOUT, "slow")
    assert classify(original, provider="p", model="m") is original
    assert (original.provider, original.model) == ("p", "m")
    assert "Timeout" in repr(original)


def _rejected_answer() -> ProviderError:
    try:
        validate_text("I'm sorry, but I can't help with that.", ValidationSettings())
    except ProviderError as err:
        return err
    raise AssertionError("the refusal was accepted")


def _sdk_connection_error() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=httpx2.Request("POST", URL))


def _wrapped_emfile() -> httpx2.ConnectError:
    try:
        raise httpx2.ConnectError("connect failed") from OSError(errno.EMFILE, "Too many open files")
    except httpx2.ConnectError as exc:
        return exc


# Every failure on the taxonomy: (what was raised) → (class, category, kind, transient, reason).
CLASSIFICATION_TABLE = [
    # system: network
    (_sdk_connection_error, "ConnectionError", "network", "system", True, "connection"),
    (
        lambda: ConnectionRefusedError("inventory service unreachable"),
        "ConnectionError",
        "network",
        "system",
        True,
        None,
    ),
    (lambda: TimeoutExceeded("tool", 60), "Timeout", "network", "system", True, "timeout_tool"),
    (lambda: TimeoutError(), "Timeout", "network", "system", True, "timeout"),
    (lambda: httpx.ReadTimeout("slow"), "Timeout", "network", "system", True, "timeout"),
    # system: resource
    (lambda: MemoryError(), "ResourceExhausted", "resource", "system", True, "memory"),
    (
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        "ResourceExhausted",
        "resource",
        "system",
        True,
        "enospc",
    ),
    (lambda: OSError(errno.EMFILE, "Too many open files"), "ResourceExhausted", "resource", "system", True, "emfile"),
    (lambda: OSError(errno.ENFILE, "File table overflow"), "ResourceExhausted", "resource", "system", True, "enfile"),
    (
        lambda: OSError(errno.ENOMEM, "Cannot allocate memory"),
        "ResourceExhausted",
        "resource",
        "system",
        True,
        "enomem",
    ),
    (_wrapped_emfile, "ResourceExhausted", "resource", "system", True, "emfile"),
    (lambda: sdk_status_error(429), "RateLimitError", "resource", "system", True, "http_429"),
    (lambda: BudgetExceeded("daily", 1.0), "BudgetExceeded", "resource", "system", False, "budget_exceeded"),
    # system: dependency
    (lambda: sdk_status_error(503), "ServiceUnavailable", "dependency", "system", True, "http_503"),
    (lambda: BudgetUnavailable("store down"), "ServiceUnavailable", "dependency", "system", True, "budget_unavailable"),
    (
        lambda: FallbackExhausted("x", hops=[Hop("primary", "breaker_open", reason="breaker_open")]),
        "ServiceUnavailable",
        "dependency",
        "system",
        True,
        "breaker_open",
    ),
    # business: input
    (lambda: sdk_status_error(400), "BadRequest", "input", "business", False, "http_400"),
    (lambda: sdk_status_error(401), "AuthenticationError", "input", "business", False, "http_401"),
    # business: data (a malformed body)
    (lambda: json.JSONDecodeError("truncated", '{"id', 4), "InvalidResponse", "data", "business", True, "malformed"),
    # business: logic (a rejected answer, a tool's own error)
    (_rejected_answer, "RejectedAnswer", "logic", "business", False, "refusal"),
    (lambda: ValueError("order 42 not found"), "LogicError", "logic", "business", False, "ValueError"),
    (lambda: KeyError("sku"), "LogicError", "logic", "business", False, "KeyError"),
    (lambda: FileNotFoundError(errno.ENOENT, "gone"), "LogicError", "logic", "business", False, "FileNotFoundError"),
]


@pytest.mark.parametrize(("raise_", "cls", "category", "kind", "transient", "reason"), CLASSIFICATION_TABLE)
def test_classify_any_puts_every_failure_on_the_taxonomy(raise_, cls, category, kind, transient, reason):
    found = classify_any(raise_())
    assert isinstance(found, Classified)
    assert (found.error_class.value, found.category.value, found.kind, found.transient) == (
        cls,
        category,
        kind,
        transient,
    )
    if reason is not None:
        assert found.reason == reason
    assert found.log_fields() == {"error_class": cls, "error_category": category}
    assert found.to_dict()["kind"] == kind


def test_a_provider_call_running_out_of_resources_is_retried_not_unexpected():
    err = classify(OSError(errno.ENOSPC, "No space left on device"), provider="p", model="m")
    assert (err.error_class, err.transient, err.category) == (
        ErrorClass.RESOURCE_EXHAUSTED,
        True,
        ErrorCategory.RESOURCE,
    )


def test_a_chain_that_failed_is_classified_by_its_last_error_and_recorded_names_are_described():
    last = ProviderError(ErrorClass.RATE_LIMIT, "slow down", status=429)
    assert classify_any(FallbackExhausted("x", last_error=last)).error_class is ErrorClass.RATE_LIMIT
    hops = [
        {"handler": "primary", "outcome": "failed", "error_class": "ServiceUnavailable", "reason": "max_retries"},
        {"handler": "backup", "outcome": "invalid", "error_class": "RejectedAnswer", "reason": "refusal"},
        {"handler": "rules", "outcome": "no_rule", "error_class": None, "reason": "no_rule"},
    ]
    assert from_hops(hops) == Classified(ErrorClass.REJECTED_ANSWER, ErrorCategory.LOGIC, False, "refusal")
    assert from_hops([]) is None
    assert describe("ResourceExhausted").category is ErrorCategory.RESOURCE
    assert describe("RequestTimeout").error_class is ErrorClass.TIMEOUT
    assert describe("AllFallbacksFailed").category is ErrorCategory.DEPENDENCY
    assert describe("ToolRejected").kind == "business"
    assert describe("ZeroDivisionError") is None and describe("") is None


def test_validation_failures_override_transience():
    err = ProviderError(ErrorClass.INVALID_RESPONSE, "refused", transient=False, reason="refusal")
    assert err.transient is False and err.category is ErrorCategory.DATA


def test_status_table_edges():
    assert error_class_for_status(408) is ErrorClass.TIMEOUT
    assert error_class_for_status(409) is ErrorClass.SERVICE_UNAVAILABLE
    assert error_class_for_status(418) is ErrorClass.BAD_REQUEST


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "0"}) == 0.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    now = time.time()
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert 18 <= parse_retry_after({"retry-after": date}, now=now) <= 21
    # The headers objects of httpx / httpx2 are case-insensitive mappings.
    assert parse_retry_after(httpx2.Headers({"Retry-After": "4"})) == 4.0
