"""Agent rows: one per registered agent function or external agent (API key holder)."""

from __future__ import annotations

from django.db import transaction

from agentops.runs import ports
from agentops.runs.models import Agent
from agentops.runs.registry import load_agents


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
