"""Agent functions. Built-in demo agents live here; a deployment adds its own modules with the
AGENTOPS_AGENT_MODULES setting (comma-separated import paths)."""

from __future__ import annotations

import importlib

from django.conf import settings

from agentops.runtime.context import AGENTS, AgentSpec

BUILT_IN = ("agentops.demo.agents.support_refund", "agentops.demo.agents.research")


def load_agents() -> dict[str, AgentSpec]:
    """Import every agent module once and return the registry (name → spec)."""
    for module in (*BUILT_IN, *settings.AGENTOPS_AGENT_MODULES):
        importlib.import_module(module)
    return AGENTS
