"""One WebSocket consumer for every live page.

The socket only says "something changed in <group>"; the page then re-reads the database through an
htmx request. Channel layers deliver at most once, so pages also reconcile on every (re)connect.
"""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agentops.live import group_allowed


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.group = self.scope["url_route"]["kwargs"]["topic"]
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(group_allowed)(user, self.group):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """Clients only listen; anything they send is ignored."""

    async def live_event(self, message):
        await self.send(
            text_data=json.dumps(
                {"group": message["group"], "event": message["event"], "data": message.get("data", {})}
            )
        )
