"""Who is calling the REST API: the bearer key of an agent, rate limited per key."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja.security import HttpBearer

from agentops.api.errors import ApiError
from agentops.keys.tokens import Principal, lookup
from agentops.lib.ratelimit import take


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        principal = lookup(token)
        if principal is None:
            return None  # 401
        if not principal.enabled:
            raise ApiError(
                403,
                "agent_disabled",
                _("agent %(agent)s is disabled: its keys are refused until an agent admin enables it again")
                % {"agent": principal.agent},
                {"agent": principal.agent},
            )
        take(principal.key_id, principal.rate_per_minute)  # raises RateLimited
        return principal
