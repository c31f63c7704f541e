"""Schemas shared by every API router: the one error shape, declared on each operation so the OpenAPI
document (and schemathesis) knows every status an endpoint can answer."""

from __future__ import annotations

from typing import Any

from ninja import Schema


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
