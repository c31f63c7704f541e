"""Async-native middleware for machine endpoints (/healthz, /readyz, /metrics, /api/v1, /v1).

Django's built-in middleware runs its hooks through sync_to_async under ASGI: two thread hops per
middleware per request. Machine endpoints need none of sessions, CSRF, messages or htmx, so they get
this lean stack instead (see agentops/asgi.py); browser pages keep the full one.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

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
