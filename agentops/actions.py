"""The only code that changes agentops state (users and roles now; agents, runs and steps later)."""

from __future__ import annotations

import structlog
from django.contrib.auth.models import Group, User
from django.db import transaction

from agentops.roles import ROLE_GROUPS

log = structlog.get_logger(__name__)


@transaction.atomic
def ensure_role_groups() -> None:
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


@transaction.atomic
def ensure_user(username: str, password: str, *, roles: tuple[str, ...] = (), superuser: bool = False) -> User:
    """Create or update a user so they can sign in with `password` and hold exactly `roles`."""
    user, _ = User.objects.get_or_create(username=username)
    user.is_superuser = superuser
    user.is_staff = superuser
    user.is_active = True
    if not user.check_password(password):
        user.set_password(password)
    user.save()
    user.groups.set(Group.objects.filter(name__in=roles))
    return user


# --- runtime settings (admin-editable) ---------------------------------------------------------
def _reload_runtime_config_everywhere() -> None:
    """After commit: every process re-reads the runtime config within about a second."""
    from agentops.runtime_config import bump_version

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


# --- circuit breakers (state in Redis) ---------------------------------------------------------
BREAKER_OPERATIONS = ("force_open", "force_close", "reset")


def operate_breaker(name: str, operation: str, *, actor: User | None = None) -> dict:
    """An operator forces a breaker open or closed, or resets it. Returns its new snapshot."""
    from agentops import live
    from agentops.guarding import breaker_registry

    if operation not in BREAKER_OPERATIONS:
        raise ValueError(f"unknown breaker operation {operation!r}")
    provider, _, model = name.partition(":")
    if not provider or not model:
        raise ValueError(f"a breaker name is provider:model, not {name!r}")
    breaker = breaker_registry().get(provider, model)
    getattr(breaker, operation)()
    log.info("breaker.operated", breaker=name, operation=operation, actor=getattr(actor, "username", None))
    live.send_now("ops", "breaker.operated", {"breaker": name, "operation": operation})
    return breaker.snapshot()
