"""ASGI entry point: Django views over HTTP, Channels consumers over WebSocket (uvicorn serves both).

HTTP is split by path: machine endpoints (health, metrics, REST API, OpenAI gateway) go through a
Django handler with a lean async-native middleware stack; browser pages through the full one.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

import django

django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402

from agentops.lib.request_threads import ReusedThreadsASGIHandler  # noqa: E402


class MachineASGIHandler(ReusedThreadsASGIHandler):
    """The same URLconf and views, with settings.MACHINE_MIDDLEWARE instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        # BaseHandler reads settings.MIDDLEWARE; swap it only while this handler builds its chain
        # (once, at import, before any request is served).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.MACHINE_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full


browser_http = ReusedThreadsASGIHandler()
machine_http = MachineASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from agentops.routing import websocket_urlpatterns  # noqa: E402

if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    browser_http = ASGIStaticFilesHandler(browser_http)


from agentops.gateway import app as gateway  # noqa: E402
from agentops.runtime import tokens  # noqa: E402

tokens.warm(background=True)  # the gateway's first reservation need not wait for the tokenizer to load

GATEWAY_PREFIX = "/v1/"


async def http_router(scope, receive, send):
    if scope["path"].startswith(GATEWAY_PREFIX):  # raw ASGI: the overhead budget is a few ms (gateway/app.py)
        await gateway(scope, receive, send)
        return
    handler = machine_http if scope["path"].startswith(settings.MACHINE_PATH_PREFIXES) else browser_http
    await handler(scope, receive, send)


from agentops.lib.bodylimit import BodyLimit  # noqa: E402

# BodyLimit outermost: a body over the limit is refused before any handler reads it (agentops/lib/bodylimit.py).
application = BodyLimit(
    ProtocolTypeRouter(
        {
            "http": http_router,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
