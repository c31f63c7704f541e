"""The only code that changes API keys (their last use aside: verification records it, in tokens.py)."""

from __future__ import annotations

import structlog
from django.db import transaction
from django.utils import timezone

from agentops.keys.models import ApiKey
from agentops.keys.tokens import hash_key, new_key, validate_scopes
from agentops.runs.actions.agents import ensure_agent

log = structlog.get_logger(__name__)


def create_api_key(
    agent_name: str, *, scopes=None, name: str = "", created_by: str = "", max_in_flight: int | None = None
) -> tuple[ApiKey, str]:
    """A new key for ``agent_name`` (the agent is created if missing). Returns the row and the key itself,
    which is never stored and cannot be shown again. Without ``scopes`` a key gets every agent scope,
    never ``admin``; without ``max_in_flight``, the model's default gateway share."""
    chosen = validate_scopes(list(scopes) if scopes else list(ApiKey.AGENT_SCOPES))
    with transaction.atomic():
        agent = ensure_agent(agent_name)
        prefix, key = new_key()
        row = ApiKey(
            agent=agent, name=name[:100], prefix=prefix, secret_hash=hash_key(key), scopes=chosen, created_by=created_by
        )
        if max_in_flight is not None:
            ApiKey._meta.get_field("max_in_flight").run_validators(max_in_flight)  # ValidationError
            row.max_in_flight = max_in_flight
        row.save()
    log.info("api_key.created", agent=agent_name, prefix=prefix, scopes=chosen)
    return row, key


def set_api_key_max_in_flight(key_id: int, max_in_flight: int) -> None:
    """Change a key's gateway share (every process sees it within API_KEY_CACHE_SECONDS, as a revocation)."""
    field = ApiKey._meta.get_field("max_in_flight")
    field.run_validators(max_in_flight)
    with transaction.atomic():
        ApiKey.objects.filter(pk=key_id).update(max_in_flight=max_in_flight)
    log.info("api_key.max_in_flight", key_id=key_id, max_in_flight=max_in_flight)


def revoke_api_key(key_id: int) -> bool:
    """Revoke a key (at once for new requests; a process that verified it in the last seconds may still
    accept it until its short verification cache expires). False if already revoked or missing."""
    with transaction.atomic():
        updated = ApiKey.objects.filter(pk=key_id, revoked_at=None).update(revoked_at=timezone.now())
    if updated:
        log.info("api_key.revoked", key_id=key_id)
    return bool(updated)
