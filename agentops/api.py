"""The agent REST API at /api/v1 (DESIGN.md §8): django-ninja, OpenAPI at /api/v1/openapi.json, docs at
/api/v1/docs. Agents authenticate with their API key (``Authorization: Bearer ao_…``); every endpoint names
the scope it needs. Every error has one shape, ``{"error": {"code", "message", "details"}}``, and nothing an
agent sends yields a 5xx.

Routers live beside the state they change: runs here (agentops/api_runs.py), actions in review/api.py,
usage, reservations and budgets in budgets/api.py. They all call their app's actions.py.
"""

from __future__ import annotations

import structlog
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from agentops import jsonbody
from agentops.apikeys import Principal, verify
from agentops.ratelimit import RateLimited, take

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An error for the agent: status, a stable machine code, a sentence, optional details."""

    def __init__(self, status: int, code: str, message: str, details: dict | list | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}
        self.headers = headers or {}


def not_found(what: str) -> ApiError:
    """Also for another agent's objects: the answer never tells whether they exist."""
    return ApiError(404, "not_found", f"no such {what}")


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        principal = verify(token)
        if principal is not None:
            take(principal.key_id)  # raises RateLimited
        return principal


def require(request: HttpRequest, scope: str) -> Principal:
    """The caller, if its key has ``scope`` (``admin`` has every scope); else 403."""
    principal: Principal = request.auth
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this key lacks the {scope!r} scope", {"scope": scope})
    return principal


class ApiParser(Parser):
    """Bodies through agentops/jsonbody.py: nesting is bounded and no text PostgreSQL cannot store gets in,
    whatever field (declared or free-form) it sits in. Ninja turns a parse error into ``HttpError(400)``
    with our ``BodyProblem`` as its cause; ``_http_error`` answers it."""

    def parse_body(self, request: HttpRequest):
        return jsonbody.loads(request.body)


api = NinjaAPI(
    parser=ApiParser(),
    title="agentops",
    version="1",
    description="Runs, permission requests, usage, reservations and budgets for agents. "
    "Authenticate with `Authorization: Bearer <API key>`.",
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    auth=ApiKeyAuth(),
)


def error_response(request, status: int, code: str, message: str, details=None, headers=None) -> HttpResponse:
    response = api.create_response(
        request, {"error": {"code": code, "message": message, "details": details or {}}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


@api.exception_handler(RateLimited)
def _rate_limited(request, exc: RateLimited):
    retry = max(1, int(exc.retry_after + 0.999))
    return error_response(
        request,
        429,
        "rate_limited",
        f"too many requests for this key; retry after {retry} s",
        {"retry_after": retry},
        {"Retry-After": str(retry)},
    )


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return error_response(
        request,
        401,
        "unauthenticated",
        "a valid API key is required: Authorization: Bearer <key> (missing, unknown or revoked)",
        headers={"WWW-Authenticate": "Bearer"},
    )


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in exc.errors
    ]
    # A body that is not JSON at all is malformed (400; ninja itself answers most of those); well-formed JSON
    # with bad fields ("unable to parse string as an integer" included) is 422.
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(request, 400, "malformed", "the request body is not valid JSON", {"errors": errors})
    return error_response(request, 422, "invalid", "the request did not pass validation", {"errors": errors})


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    if isinstance(exc.__cause__, jsonbody.BodyProblem):
        return _body_problem(request, exc.__cause__)
    code = {400: "malformed", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return error_response(request, exc.status_code, code, str(exc))


def _body_problem(request, problem: jsonbody.BodyProblem) -> HttpResponse:
    if problem.malformed:
        return error_response(request, 400, "malformed", problem.message, {"loc": ["body", *problem.path]})
    error = {"loc": ["body", *problem.path], "msg": problem.message, "type": "value_error"}
    return error_response(request, 422, "invalid", problem.message, {"errors": [error]})


@api.exception_handler(Http404)
def _missing(request, exc):
    return error_response(request, 404, "not_found", "not found")


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(request, 413, "too_large", f"the request body is over {limit} bytes", {"limit": limit})


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request, exc):
    """PostgreSQL is away (restarting, failing over): retry shortly (with an idempotency key a retry is safe)."""
    log.warning("api.database_unavailable", path=request.path, error=repr(exc)[:300])
    return error_response(
        request,
        503,
        "database_unavailable",
        "the database is unavailable; retry shortly (send an Idempotency-Key to make the retry safe)",
        {"retry_after": 2},
        {"Retry-After": "2"},
    )


@api.exception_handler(Exception)
def _unexpected(request, exc: Exception):
    log.exception("api.unexpected_error", path=request.path, error=repr(exc)[:300])
    return error_response(request, 500, "internal", "something went wrong on our side; the request was not applied")


def _add_routers() -> None:
    for module, prefix in (("agentops.api_runs", "/runs"), ("review.api", "/actions"), ("budgets.api", "")):
        try:
            router = __import__(module, fromlist=["router"]).router
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        api.add_router(prefix, router)


_add_routers()

# The OpenAPI document is built once per process: building it costs ~0.2 s of CPU and anyone may ask for it.
_openapi_documents: dict[str, object] = {}
_build_openapi = api.get_openapi_schema


def _openapi_once(*, path_prefix: str | None = None, path_params: dict | None = None):
    if path_prefix is None:
        path_prefix = api.get_root_path(path_params or {})
    if path_prefix not in _openapi_documents:
        _openapi_documents[path_prefix] = _build_openapi(path_prefix=path_prefix)
    return _openapi_documents[path_prefix]


api.get_openapi_schema = _openapi_once
