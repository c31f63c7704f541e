"""Users and their roles."""

from __future__ import annotations

import structlog
from django.contrib.auth.models import Group, User
from django.db import transaction

from agentops.accounts.roles import ROLE_GROUPS

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
