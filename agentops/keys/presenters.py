"""What the Agents screen shows, as plain display values (the templates hold no logic). Agent names, teams and
key names are typed by people or agents: the templates only ever auto-escape them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from agentops.keys.models import ApiKey
from agentops.lib import display
from agentops.runs.models import Agent

TOOL_REVIEW_BADGES = {Agent.ToolReview.HOLD: "warn", Agent.ToolReview.ANNOTATE: "", Agent.ToolReview.OFF: "muted"}


def ago(when: datetime | None, now: datetime) -> str:
    """ "3 min ago", or "never"."""
    if when is None:
        return _("never")
    return _("%(age)s ago") % {"age": display.age((now - when).total_seconds())}


def moment(when: datetime | None) -> str:
    """A date and time in the server's zone, to the minute: "2026-12-06 14:05 UTC"; "—" for none."""
    if when is None:
        return display.DASH
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class AgentRow:
    name: str
    url: str
    team: str
    enabled: bool
    tool_review: str
    tool_review_badge: str
    keys: int
    last_used: str


def agent_rows(now: datetime) -> list[AgentRow]:
    """Every agent, by name: its settings, active keys and when one of its keys was last used."""
    agents = Agent.objects.annotate(
        active_keys=Count("api_keys", filter=Q(api_keys__revoked_at=None)),
        last_used=Max("api_keys__last_used_at"),
    ).order_by("name")
    return [
        AgentRow(
            name=agent.name,
            url=reverse("agents:detail", args=[agent.name]),
            team=agent.team or display.DASH,
            enabled=agent.enabled,
            tool_review=agent.get_gateway_tool_review_display(),
            tool_review_badge=TOOL_REVIEW_BADGES.get(agent.gateway_tool_review, ""),
            keys=agent.active_keys,
            last_used=ago(agent.last_used, now),
        )
        for agent in agents
    ]


@dataclass(frozen=True)
class KeyRow:
    pk: int
    prefix: str
    name: str
    scopes: str
    created: str
    created_by: str
    last_used: str
    state: str
    state_badge: str
    active: bool  # not revoked: its limits can be edited, it can be revoked
    allowed_models: str
    expires: str
    rate: str
    max_in_flight: int
    form: object | None  # its limits form (agentops.keys.forms.KeyLimitsForm), for an active key
    limits_url: str
    revoke_url: str


def key_state(key: ApiKey, now: datetime) -> tuple[str, str]:
    if key.revoked_at is not None:
        return _("revoked %(when)s") % {"when": ago(key.revoked_at, now)}, "muted"
    if key.expired(now):
        return _("expired"), "bad"
    return _("active"), "ok"


def agent_keys(agent: Agent) -> list[ApiKey]:
    """The agent's keys, active first, then newest first."""
    return sorted(agent.api_keys.all(), key=lambda key: (key.revoked_at is not None, -key.created_at.timestamp()))


def key_rows(keys: list[ApiKey], now: datetime, forms: dict[int, object]) -> list[KeyRow]:
    """Display rows of ``keys`` (``agent_keys``); ``forms``: each active key's limits form, by id."""
    rows = []
    for key in keys:
        state, badge = key_state(key, now)
        active = key.revoked_at is None
        rows.append(
            KeyRow(
                pk=key.pk,
                prefix=key.prefix,
                name=key.name,
                scopes=", ".join(key.scopes),
                created=moment(key.created_at),
                created_by=key.created_by or display.DASH,
                last_used=ago(key.last_used_at, now),
                state=state,
                state_badge=badge,
                active=active,
                allowed_models=", ".join(key.allowed_models or ()) or _("every model"),
                expires=moment(key.expires_at) if key.expires_at else _("never"),
                rate=(
                    _("%(n)s a minute") % {"n": f"{key.rate_per_minute:,}"}
                    if key.rate_per_minute
                    else _("server default")
                ),
                max_in_flight=key.max_in_flight,
                form=forms.get(key.pk) if active else None,
                limits_url=reverse("agents:key_limits", args=[key.agent.name, key.pk]),
                revoke_url=reverse("agents:key_revoke", args=[key.agent.name, key.pk]),
            )
        )
    return rows
