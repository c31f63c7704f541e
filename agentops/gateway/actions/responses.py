"""Stored ``/v1/responses`` answers: kept per agent, read back only by that agent, deleted when expired."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentops.gateway.models import StoredResponse


def save_response(response_id: str, agent_id: int, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """Keep an answer (``body``) and the conversation it ends (``items``) for the retention period."""
    now = timezone.now()
    with transaction.atomic():
        StoredResponse.objects.create(
            id=response_id,
            agent_id=agent_id,
            body=body,
            items=items,
            created_at=now,
            expires_at=now + timedelta(days=settings.AGENTOPS_RESPONSES_RETENTION_DAYS),
        )


def find_response(response_id: str, agent_id: int) -> StoredResponse | None:
    """The agent's own unexpired answer ``response_id``; another agent's is as missing as an unknown one."""
    return StoredResponse.objects.filter(id=response_id, agent_id=agent_id, expires_at__gt=timezone.now()).first()


def purge_expired(batch: int = 5000) -> int:
    """Delete expired answers (in batches, so a large backlog never holds one long transaction); the count."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                StoredResponse.objects.filter(expires_at__lte=timezone.now()).values_list("id", flat=True)[:batch]
            )
            if not ids:
                return deleted
            deleted += StoredResponse.objects.filter(id__in=ids).delete()[0]


def delete_response(response_id: str, agent_id: int) -> bool:
    """Delete the agent's own answer ``response_id``; whether there was one."""
    with transaction.atomic():
        return StoredResponse.objects.filter(id=response_id, agent_id=agent_id).delete()[0] > 0
