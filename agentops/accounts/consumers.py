"""One WebSocket consumer for every live page.

The socket only says "something changed in <group>"; the page then re-reads the database through an
htmx request. Channel layers deliver at most once, so pages also reconcile on every (re)connect.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agentops.accounts import roles

log = structlog.get_logger(__name__)
# Joining the group is one Redis call; one that hangs (Redis restarting under a pooled connection) would leave
# the browser's handshake pending with no close event, so it would never retry.
JOIN_TIMEOUT = 5.0


def group_allowed(user, group: str) -> bool:
    """May this user listen to this group? (Runs and the queue for reviewers, etc.)"""
    if group == "ops":
        return roles.can_open(user, "ops")
    if group in ("alerts", "budgets"):
        return roles.can_open(user, "budgets") or roles.can_open(user, "costs")
    if group == "review.queue":
        return roles.can_open(user, "queue")
    if group == "review.experts":
        return user.is_superuser or roles.EXPERT in roles.user_roles(user)
    if group == "runs" or (group.startswith("run.") and group[4:].isdigit()):
        return roles.can_open(user, "runs")
    return False


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
        try:
            await asyncio.wait_for(self.channel_layer.group_add(self.group, self.channel_name), JOIN_TIMEOUT)
        except Exception as exc:  # Redis away or restarting: refuse, and the page retries in a few seconds
            log.warning("live.join_failed", group=self.group, error=repr(exc)[:200])
            await self.close(code=1013)
            return
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            try:
                await asyncio.wait_for(self.channel_layer.group_discard(self.group, self.channel_name), JOIN_TIMEOUT)
            except Exception:  # Redis away: the membership expires by itself (group_expiry)
                log.info("live.leave_failed", group=self.group)

    async def receive(self, text_data=None, bytes_data=None):
        """Clients only listen; anything they send is ignored."""

    async def live_event(self, message):
        await self.send(
            text_data=json.dumps(
                {"group": message["group"], "event": message["event"], "data": message.get("data", {})}
            )
        )
