"""Agent rows: one per registered agent function or external agent (API key holder)."""

from __future__ import annotations

import structlog
from django.db import transaction

from agentops.runs import ports
from agentops.runs.models import Agent
from agentops.runs.registry import load_agents

log = structlog.get_logger(__name__)


@transaction.atomic
def ensure_agent(name: str, *, description: str = "", team: str = "") -> Agent:
    """The agent's row, created if missing; a description replaces the old one, a team fills a blank one
    (a team an admin set is kept)."""
    agent, created = Agent.objects.get_or_create(name=name, defaults={"description": description, "team": team})
    changed = []
    if not created and description and agent.description != description:
        agent.description = description
        changed.append("description")
    if not created and team and not agent.team:
        agent.team = team
        changed.append("team")
    if changed:
        agent.save(update_fields=changed)
    if "team" in changed or (created and team):  # budgets read the agent's team with their directory
        transaction.on_commit(ports.current().agents_changed)
    return agent


def sync_registered_agents() -> list[Agent]:
    """Make sure every registered agent function has its Agent row."""
    return [ensure_agent(spec.name, description=spec.description) for spec in load_agents().values()]


AGENT_SETTINGS = ("team", "enabled", "gateway_tool_review", "gateway_human")  # what the Agents screen edits


def update_agent(name: str, **changes) -> Agent:
    """Change an agent's settings (``AGENT_SETTINGS``; the Agents screen). Validated like the model's fields
    (``ValidationError`` naming the field). A disabled agent's keys are refused (403) and its runs do not start;
    each process notices within API_KEY_CACHE_SECONDS. Budgets re-read the directory when the team changed."""
    unknown = sorted(set(changes) - set(AGENT_SETTINGS))
    if unknown:
        raise ValueError(f"not an agent setting: {', '.join(unknown)}")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(name=name)
        changed = [field for field, value in changes.items() if getattr(agent, field) != value]
        for field in changed:
            setattr(agent, field, changes[field])
        agent.full_clean(exclude=[f.name for f in Agent._meta.fields if f.name not in changed], validate_unique=False)
        if changed:
            agent.save(update_fields=changed)
        if "team" in changed:
            transaction.on_commit(ports.current().agents_changed)
    if changed:
        log.info("agent.updated", agent=name, changed={field: changes[field] for field in changed})
    return agent
