"""Schemas shared by every API router: the one error shape, declared on each operation so the OpenAPI
document (and schemathesis) knows every status an endpoint can answer."""

from __future__ import annotations

from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator

from agentops.lib import jsonbody

MAX_ID = 2**63 - 1  # bigint primary keys: a larger id is invalid (422), not a database error


def storable(value):
    """PostgreSQL text and jsonb hold neither NUL characters nor lone surrogates: refuse them (422) instead
    of failing when stored (5xx). Bodies are checked whole when parsed (ApiParser in agentops/api/); this
    covers query and path parameters, with the same rule (agentops/lib/jsonbody.py)."""
    try:
        jsonbody.check(value)
    except jsonbody.BodyProblem as problem:
        raise ValueError(problem.message) from None
    return value


Text = Annotated[str, AfterValidator(storable)]
JsonObject = Annotated[dict[str, Any], AfterValidator(storable)]


class ErrorBody(Schema):
    code: str
    message: str
    details: dict[str, Any] | list[Any] = {}


class ErrorOut(Schema):
    error: ErrorBody


# The statuses every authenticated endpoint may answer besides its own.
COMMON_ERRORS: dict[int, type[Schema]] = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    413: ErrorOut,
    422: ErrorOut,
    429: ErrorOut,
}


def responses(ok: dict[int, Any], *extra: int) -> dict[int, Any]:
    """An operation's response map: its own statuses, the common errors and ``extra`` error statuses."""
    return {**ok, **COMMON_ERRORS, **{status: ErrorOut for status in extra}}
