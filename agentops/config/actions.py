"""Changes to the runtime configuration (admin-editable); every worker reloads it after commit."""

from __future__ import annotations

import structlog
from django.contrib.auth.models import User
from django.db import transaction

from agentops.config.source import bump_version

log = structlog.get_logger(__name__)


def _reload_runtime_config_everywhere() -> None:
    """After commit: every process re-reads the runtime config within about a second."""

    def bump():
        try:
            bump_version()
        except Exception:  # Redis down: workers still reload when their 30 s TTL runs out
            log.warning("runtime_config.bump_failed", exc_info=True)

    transaction.on_commit(bump)


@transaction.atomic
def save_runtime_object(obj, *, actor: User | None = None) -> None:
    """Save an admin-edited runtime setting (provider, route, retry policy, rule, settings row)."""
    obj.full_clean()
    obj.save()
    log.info("runtime_config.saved", model=type(obj).__name__, object=str(obj), actor=getattr(actor, "username", None))
    _reload_runtime_config_everywhere()


@transaction.atomic
def delete_runtime_object(obj, *, actor: User | None = None) -> None:
    log.info(
        "runtime_config.deleted", model=type(obj).__name__, object=str(obj), actor=getattr(actor, "username", None)
    )
    obj.delete()
    _reload_runtime_config_everywhere()
