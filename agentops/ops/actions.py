"""Operator actions on live state: circuit breakers (their state lives in Redis)."""

from __future__ import annotations

import structlog
from django.contrib.auth.models import User

from agentops import wiring
from agentops.lib import live

log = structlog.get_logger(__name__)


BREAKER_OPERATIONS = ("force_open", "force_close", "reset")


def operate_breaker(name: str, operation: str, *, actor: User | None = None) -> dict:
    """An operator forces a breaker open or closed, or resets it. Returns its new snapshot."""
    if operation not in BREAKER_OPERATIONS:
        raise ValueError(f"unknown breaker operation {operation!r}")
    provider, _, model = name.partition(":")
    if not provider or not model:
        raise ValueError(f"a breaker name is provider:model, not {name!r}")
    breaker = wiring.breaker_registry().get(provider, model)
    getattr(breaker, operation)()
    log.info("breaker.operated", breaker=name, operation=operation, actor=getattr(actor, "username", None))
    live.send_now("ops", "breaker.operated", {"breaker": name, "operation": operation})
    return breaker.snapshot()
