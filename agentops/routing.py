from django.urls import re_path

from agentops.accounts.consumers import LiveConsumer

websocket_urlpatterns = [
    re_path(r"^ws/live/(?P<topic>[a-z][a-z0-9_.-]{0,63})/$", LiveConsumer.as_asgi()),
]
