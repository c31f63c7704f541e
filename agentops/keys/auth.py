"""Who is calling the REST API: the bearer key of an agent, rate limited per key."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from agentops.keys.tokens import Principal, verify
from agentops.lib.ratelimit import take


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        principal = verify(token)
        if principal is not None:
            take(principal.key_id)  # raises RateLimited
        return principal
