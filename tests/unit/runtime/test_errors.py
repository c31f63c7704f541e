"""The error taxonomy and the classifier: real SDK / httpx exceptions in, one ProviderError out."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import httpx2
import openai
import pytest

from agentops.runtime.errors import (
    ErrorCategory,
    ErrorClass,
    ProviderError,
    classify,
    error_class_for_status,
    from_status,
    parse_retry_after,
)
from agentops.runtime.timeouts import TimeoutExceeded

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
    }
    assert [c.value for c in ErrorClass] == [
        "ConnectionError",
        "Timeout",
        "RateLimitError",
        "ServiceUnavailable",
        "AuthenticationError",
        "BadRequest",
        "InvalidResponse",
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
