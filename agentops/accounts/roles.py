"""Who may open what. One table drives both the navigation and the view guards."""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

REVIEWER, EXPERT, BUDGET_ADMIN = "reviewer", "expert", "budget_admin"
AGENT_ADMIN = "agent_admin"  # the Agents screen: teams, enabled, tool review, API keys and their limits
ROLE_GROUPS = (REVIEWER, EXPERT, BUDGET_ADMIN, AGENT_ADMIN)
ROLE_LABELS = {
    REVIEWER: _("reviewer"),
    EXPERT: _("expert"),
    BUDGET_ADMIN: _("budget admin"),
    AGENT_ADMIN: _("agent admin"),
}


@dataclass(frozen=True)
class Section:
    key: str
    label: str  # translated lazily (gettext_lazy)
    url_name: str
    roles: frozenset[str]  # superusers may open every section


SECTIONS = (
    Section("queue", _("Queue"), "review:queue", frozenset({REVIEWER, EXPERT})),
    Section("runs", _("Runs"), "runs:list", frozenset({REVIEWER, EXPERT})),
    Section("budgets", _("Budgets"), "budgets:list", frozenset({BUDGET_ADMIN})),
    Section("costs", _("Costs"), "budgets:costs", frozenset({BUDGET_ADMIN})),
    Section("agents", _("Agents"), "agents:list", frozenset({AGENT_ADMIN})),
    Section("ops", _("Ops"), "ops", frozenset()),
)
SECTIONS_BY_KEY = {section.key: section for section in SECTIONS}


def user_roles(user) -> frozenset[str]:
    if not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_agentops_roles", None)
    if cached is None:
        cached = frozenset(user.groups.filter(name__in=ROLE_GROUPS).values_list("name", flat=True))
        user._agentops_roles = cached
    return cached


def can_open(user, section_key: str) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return bool(SECTIONS_BY_KEY[section_key].roles & user_roles(user))


def is_expert(user) -> bool:
    """Experts (and superusers) see expert-queue escalations; everyone else never does (review.models
    EscalationQuerySet.visible_to applies it to every page and export)."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or EXPERT in user_roles(user)


def visible_sections(user) -> list[tuple[Section, str]]:
    """Sections this user may open whose page is installed, with their URL."""
    visible = []
    for section in SECTIONS:
        if not can_open(user, section.key):
            continue
        try:
            visible.append((section, reverse(section.url_name)))
        except NoReverseMatch:
            continue
    return visible


def navigation(request):
    """Template context processor: the nav entries for the signed-in user."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_sections": []}
    # By address, not URL namespace: /budgets/ and /costs/ are both in the budgets app.
    return {
        "nav_sections": [
            {"label": s.label, "url": url, "active": request.path.startswith(url)} for s, url in visible_sections(user)
        ]
    }


def section_required(section_key: str):
    """View decorator: login required, then the section's roles; others get 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can_open(request.user, section_key):
                label = SECTIONS_BY_KEY[section_key].label
                raise PermissionDenied(_("Your role cannot open %(section)s.") % {"section": label})
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def home_url_for(user) -> str | None:
    """The first section this user may open: where `/` sends them."""
    sections = visible_sections(user)
    return sections[0][1] if sections else None
