"""API keys: format, hashing and verification (DESIGN.md §8).

A key looks like ``ao_<prefix>_<secret>``. The prefix is public and finds the row; only a SHA-256 of the
whole key is stored and it is compared with ``hmac.compare_digest``. Verified keys are remembered per
process for ``CACHE_SECONDS`` so a busy agent does not cost a database read per request; revocation
therefore takes effect within that time everywhere (at once in the process that revoked).

An expired key (``ApiKey.expires_at`` passed) is refused like a revoked one. A key of a disabled agent is
not bad: ``lookup`` returns its principal with ``enabled=False`` so the API and the gateway can answer 403
(the agent exists, it may not act); ``verify`` refuses it like a bad key, for callers that only ask "may
this key act?".

Keys found bad (unknown, revoked, expired, wrong secret) are remembered too, as hashes, for ``BAD_SECONDS`` and at
most ``BAD_MAX`` of them: ``known_bad`` lets the gateway refuse a repeated bad key on the event loop,
before it takes a thread or a database connection.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from agentops.keys.models import ApiKey

CACHE_SECONDS = float(getattr(settings, "API_KEY_CACHE_SECONDS", 5.0))
CACHE_MAX = 10_000  # entries (prefixes) remembered per process
BAD_SECONDS = float(getattr(settings, "API_KEY_NEGATIVE_CACHE_SECONDS", 5.0))
BAD_MAX = 10_000  # hashes of bad keys remembered per process (oldest forgotten first)
TOUCH_EVERY = 60.0
KEY_PREFIX = "ao_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its agent and scopes, and the limits an agent admin set on the key."""

    key_id: int
    agent_id: int
    agent: str
    scopes: frozenset[str]
    max_in_flight: int = 16
    enabled: bool = True  # the agent's switch: False = every request of its keys is refused with 403
    allowed_models: frozenset[str] = frozenset()  # empty = every model
    rate_per_minute: int | None = None  # None = the global API_RATE_* default
    expires_at: float | None = None  # epoch seconds; from then on the key is refused like a revoked one

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def allows_model(self, model: str) -> bool:
        """May this key call ``model`` (the name exactly as the request gives it) on /v1?"""
        return not self.allowed_models or model in self.allowed_models

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at


def new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_scopes(scopes: list[str]) -> list[str]:
    known = set(ApiKey.Scope.values)
    unknown = [s for s in scopes if s not in known]
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; choose from {', '.join(ApiKey.Scope.values)}")
    return sorted(set(scopes))


def prefix_of(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = key[len(KEY_PREFIX) :].partition("_")
    return prefix if len(prefix) == 12 and secret else None


_cache: dict[str, tuple[float, str, Principal | None]] = {}
_touched: dict[int, float] = {}
_lock = threading.Lock()


_bad: dict[str, float] = {}  # sha256 of a bad key -> until when it is known bad (insertion ordered)


def forget(prefix: str | None = None) -> None:
    with _lock:
        if prefix is None:
            _cache.clear()
            _bad.clear()
        else:
            _cache.pop(prefix, None)


def _remember_bad(digest: str, now: float) -> None:
    with _lock:
        _bad.pop(digest, None)
        _bad[digest] = now + BAD_SECONDS
        while len(_bad) > BAD_MAX:  # a flood of made-up keys must not grow memory without bound
            del _bad[next(iter(_bad))]


def known_bad(key: str) -> bool:
    """True for a key that cannot be valid (malformed) or was found bad in the last ``BAD_SECONDS``: cheap
    enough for the event loop (one SHA-256, one dict lookup, no database)."""
    if prefix_of(key or "") is None:
        return True
    until = _bad.get(hash_key(key))
    return until is not None and until >= time.monotonic()


def principal_of(row: ApiKey) -> Principal:
    return Principal(
        row.pk,
        row.agent_id,
        row.agent.name,
        frozenset(row.scopes),
        row.max_in_flight,
        enabled=row.agent.enabled,
        allowed_models=frozenset(row.allowed_models or ()),
        rate_per_minute=row.rate_per_minute,
        expires_at=row.expires_at.timestamp() if row.expires_at is not None else None,
    )


def verify(key: str) -> Principal | None:
    """The principal of an active key of an enabled agent, or None (unknown, malformed, revoked, expired, or
    its agent disabled)."""
    principal = lookup(key)
    return principal if principal is not None and principal.enabled else None


def lookup(key: str) -> Principal | None:
    """The principal of an active key, or None (unknown, malformed, revoked or expired). Its agent may be
    disabled (``principal.enabled``): the caller refuses that with 403."""
    prefix = prefix_of(key or "")
    if prefix is None:
        return None
    digest = hash_key(key)
    now = time.monotonic()
    cached = _cache.get(prefix)
    if cached is None or cached[0] < now:
        row = ApiKey.objects.select_related("agent").filter(prefix=prefix, revoked_at=None).first()
        principal = principal_of(row) if row is not None else None
        cached = (now + CACHE_SECONDS, row.secret_hash if row is not None else "", principal)
        with _lock:
            if len(_cache) >= CACHE_MAX:  # made-up prefixes must not grow the cache without bound
                for stale in [p for p, entry in _cache.items() if entry[0] < now] or list(_cache):
                    del _cache[stale]
            _cache[prefix] = cached
    _, stored, principal = cached
    if principal is None or not hmac.compare_digest(stored, digest) or principal.expired():
        _remember_bad(digest, now)
        return None
    if _touched.get(principal.key_id, 0.0) < now:
        _touched[principal.key_id] = now + TOUCH_EVERY
        touch_api_key(principal.key_id)
    return principal


def touch_api_key(key_id: int) -> None:
    """Record that a key was used (verify throttles this to about once a minute per key). It lives beside
    verification rather than in actions.py, which creates keys with this module's hashing: one direction."""
    ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())
