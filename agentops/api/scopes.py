"""The scope an endpoint needs. ``request.auth`` is the caller the API's authentication found (a
``keys.tokens.Principal``); this module needs only its ``allows``, so the routers do not depend on the keys room."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest

from agentops.api.errors import ApiError

if TYPE_CHECKING:  # the type only: the keys room sits above the API plumbing
    from agentops.keys.tokens import Principal


def require(request: HttpRequest, scope: str) -> Principal:
    """The caller, if its key has ``scope`` (``admin`` has every scope); else 403."""
    principal: Principal = request.auth
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this key lacks the {scope!r} scope", {"scope": scope})
    return principal
