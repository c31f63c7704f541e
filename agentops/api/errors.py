"""The API's one error shape, ``{"error": {"code", "message", "details"}}``, and the handlers that give every
failure that shape: nothing an agent sends yields a 5xx."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from agentops.lib import jsonbody
from agentops.lib.ratelimit import RateLimited

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


def install_error_handlers(api: NinjaAPI) -> None:
    """Answer every exception the API can meet in the one error shape."""

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
            "a valid API key is required: Authorization: Bearer <key> (missing, unknown, revoked or expired)",
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
