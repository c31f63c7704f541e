"""The only code that changes API keys (their last use aside: verification records it, in tokens.py)."""

from __future__ import annotations

import structlog
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agentops.keys.models import ApiKey
from agentops.keys.tokens import forget, hash_key, new_key, validate_scopes
from agentops.runs.actions.agents import ensure_agent, update_agent

log = structlog.get_logger(__name__)


def create_api_key(
    agent_name: str,
    *,
    scopes=None,
    name: str = "",
    created_by: str = "",
    max_in_flight: int | None = None,
    **limits,
) -> tuple[ApiKey, str]:
    """A new key for ``agent_name`` (the agent is created if missing). Returns the row and the key itself,
    which is never stored and cannot be shown again. Without ``scopes`` a key gets every agent scope,
    never ``admin``; without ``max_in_flight``, the model's default gateway share. ``limits``: any of
    ``KEY_LIMITS`` (``allowed_models``, ``expires_at``, ``rate_per_minute``), validated as in
    ``set_api_key_limits``."""
    chosen = validate_scopes(list(scopes) if scopes else list(ApiKey.AGENT_SCOPES))
    if max_in_flight is not None:
        limits["max_in_flight"] = max_in_flight
    with transaction.atomic():
        agent = ensure_agent(agent_name)
        prefix, key = new_key()
        row = ApiKey(
            agent=agent, name=name[:100], prefix=prefix, secret_hash=hash_key(key), scopes=chosen, created_by=created_by
        )
        _apply_limits(row, limits)
        row.save()
    log.info("api_key.created", agent=agent_name, prefix=prefix, scopes=chosen)
    return row, key


KEY_LIMITS = ("allowed_models", "expires_at", "rate_per_minute", "max_in_flight")  # what an agent admin sets


def clean_allowed_models(models) -> list[str]:
    """Model names, stripped, unique, in order; ValidationError for a name that is not one."""
    cleaned: list[str] = []
    for raw in models or ():
        model = str(raw).strip()
        if not model:
            continue
        if len(model) > 200 or any(ch.isspace() or ch == "," for ch in model):
            raise ValidationError({"allowed_models": f"{model[:60]!r} is not a model name (no spaces or commas)"})
        if model not in cleaned:
            cleaned.append(model)
    if len(cleaned) > 100:
        raise ValidationError({"allowed_models": "at most 100 models a key"})
    return cleaned


def _apply_limits(row: ApiKey, limits: dict) -> list[str]:
    """Set ``limits`` on ``row`` (not saved), validated by the fields' own validators; the names changed."""
    unknown = sorted(set(limits) - set(KEY_LIMITS))
    if unknown:
        raise ValueError(f"not a key limit: {', '.join(unknown)}")
    if "allowed_models" in limits:
        limits = {**limits, "allowed_models": clean_allowed_models(limits["allowed_models"])}
    changed = []
    for field_name, value in limits.items():
        field = ApiKey._meta.get_field(field_name)
        if value is None and not field.null:
            raise ValidationError({field_name: "this limit cannot be empty"})
        if value is not None:
            try:
                field.run_validators(value)
            except ValidationError as exc:
                raise ValidationError({field_name: exc.messages}) from None
        if getattr(row, field_name) != value:
            setattr(row, field_name, value)
            changed.append(field_name)
    return changed


def set_api_key_limits(key_id: int, **limits) -> ApiKey:
    """Change a key's limits (``KEY_LIMITS``; the Agents screen): every process sees them within
    API_KEY_CACHE_SECONDS, as a revocation. ``expires_at=None`` / ``rate_per_minute=None`` / ``allowed_models=[]``
    lift that limit. ``ValidationError`` names the field; a revoked key's limits no longer matter (ValueError)."""
    with transaction.atomic():
        row = ApiKey.objects.select_for_update().get(pk=key_id)
        if row.revoked_at is not None:
            raise ValueError(f"key {row.prefix}… is revoked")
        changed = _apply_limits(row, limits)
        if changed:
            row.save(update_fields=changed)
    if changed:
        forget(row.prefix)  # this process at once; the others within their cache time
        log.info("api_key.limits", key_id=key_id, changed={name: str(getattr(row, name)) for name in changed})
    return row


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
        prefix = ApiKey.objects.filter(pk=key_id).values_list("prefix", flat=True).first()
        if prefix:
            forget(prefix)  # this process at once
        log.info("api_key.revoked", key_id=key_id)
    return bool(updated)


def save_agent_settings(agent_name: str, **changes):
    """The Agents screen's save: ``agentops.runs.actions.agents.update_agent``, then this process forgets the
    agent's verified keys at once (a disabled agent's keys are refused here without waiting for the cache)."""
    agent = update_agent(agent_name, **changes)
    for prefix in ApiKey.objects.filter(agent=agent).values_list("prefix", flat=True):
        forget(prefix)
    return agent
