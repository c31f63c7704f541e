"""Sign-in throttling for /accounts/login/ and /admin/login/ (django-axes, counted in PostgreSQL).

10 failed sign-ins within 15 minutes for one username (from any address), or from one client address (for any
usernames), lock that username or address out for 15 minutes from its latest attempt: every further attempt —
a right password too — answers 429 with a page saying when to retry, and starts the 15 minutes again. The
counts are django-axes rows in PostgreSQL, so every web process shares them; the admin lists them (Axes ›
Access attempts, failures and logs) and each refused attempt logs `auth.login_locked_out`.

Three things are ours rather than axes' defaults, each for a reason said in place: the client address is
REMOTE_ADDR, a successful sign-in forgives only that user's own failures from that address, and a sign-in
without an HTTP request is not throttled.
"""

from __future__ import annotations

import datetime as dt

import structlog
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.shortcuts import render
from django.utils import timezone

log = structlog.get_logger(__name__)


def client_address(request) -> str | None:
    """The peer address. Behind no proxy by default: a forwarded header would let a client pick its own
    address and so its own counter."""
    return request.META.get("REMOTE_ADDR")


class ThrottleBackend(AxesStandaloneBackend):
    """Refuses a locked-out username or address before any password is checked.

    A sign-in with no HTTP request (the test client's login(), a shell) has no client address to count and
    comes from no network, so it is not throttled; axes would raise instead."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class ThrottleHandler(AxesDatabaseHandler):
    """axes' PostgreSQL handler, except what a successful sign-in forgives.

    With per-username and per-address counters axes' reset on success deletes every failure from the
    address, and every failure against the username: one valid account would let an attacker clear their
    address's count between guesses at other accounts. Here a success forgives only the rows of this
    username from this address (a user who mistyped, then got it right)."""

    def reset_user_attempts(self, request, credentials=None) -> int:
        username = get_client_username(request, credentials)
        deleted, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return deleted


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the 429 page with the moment to retry (each refused attempt restarts the
    cool-off, so it is now + the cool-off) and a Retry-After header."""
    cool_off: dt.timedelta = settings.AXES_COOLOFF_TIME
    retry_at = timezone.now() + cool_off
    username = get_client_username(request, credentials) or ""
    log.warning(
        "auth.login_locked_out",
        username=username[:150],
        client=getattr(request, "axes_ip_address", None),
        path=request.path,
        retry_at=retry_at.isoformat(),
    )
    minutes = max(1, round(cool_off.total_seconds() / 60))
    context = {
        "minutes": minutes,
        "retry_at_text": timezone.localtime(retry_at).strftime("%H:%M %Z"),
        "login_url": request.path,
    }
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
