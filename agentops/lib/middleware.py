"""Our middleware: async-native security headers
for machine endpoints (/healthz, /readyz, /metrics, /api/v1, /v1), and a 503 page for browser pages when
PostgreSQL is away.

Django's built-in middleware runs its hooks through sync_to_async under ASGI: two thread hops per
middleware per request. Machine endpoints need none of sessions, CSRF, messages or htmx, so they get
this lean stack instead (see agentops/asgi.py); browser pages keep the full one.
"""

from __future__ import annotations

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.template import loader
from django.utils.deprecation import MiddlewareMixin

log = structlog.get_logger(__name__)

MACHINE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class MachineSecurityHeadersMiddleware:
    """Security headers for JSON and text responses, without a thread hop."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        if not iscoroutinefunction(get_response):
            raise TypeError("MachineSecurityHeadersMiddleware runs only in the async stack")
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        response = await self.get_response(request)
        for header, value in MACHINE_HEADERS.items():
            if header not in response:
                response[header] = value
        return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A page whose view met PostgreSQL away answers 503 with Retry-After and a page that reloads itself, not
    the generic 500 (the browser stack; the API answers its own JSON 503)."""

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("page.database_unavailable", path=request.path, error=str(exception)[:300])
        response = HttpResponse(loader.get_template("503.html").render(), status=503)
        response["Retry-After"] = "5"
        return response
