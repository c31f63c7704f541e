"""What the gateway keeps: the answers of ``/v1/responses`` (for ``previous_response_id`` and
``GET /v1/responses/{id}``), per agent, until ``AGENTOPS_RESPONSES_RETENTION_DAYS`` have passed."""

from __future__ import annotations

from django.db import models

from agentops.runs.models import Agent


class StoredResponse(models.Model):
    """One Responses API answer. ``body`` is the response object as the client got it; ``items`` the whole
    conversation up to and including it as Responses input items (earlier turns, this turn's input, its
    output), which is what a request naming it as ``previous_response_id`` continues from."""

    id = models.CharField(max_length=64, primary_key=True)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    body = models.JSONField()
    items = models.JSONField(default=list)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id
