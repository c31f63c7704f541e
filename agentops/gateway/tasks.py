"""The gateway's periodic work (beat)."""

from __future__ import annotations

import structlog
from celery import shared_task

from agentops.gateway.actions.responses import purge_expired

log = structlog.get_logger("agentops.gateway")


@shared_task(name="agentops.purge_responses")
def purge_responses() -> int:
    """Delete stored /v1/responses answers past AGENTOPS_RESPONSES_RETENTION_DAYS."""
    deleted = purge_expired()
    if deleted:
        log.info("gateway.responses_purged", deleted=deleted)
    return deleted
