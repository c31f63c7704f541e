"""The agent registry: which agent functions this process can run.

An agent function registers itself with ``@agent(name)`` (agentops.runtime.context) when its module is imported.
The modules come from settings: ``AGENTOPS_BUILTIN_AGENT_MODULES`` (the demo agents in agentops/demo/agents/)
and then ``AGENTOPS_AGENT_MODULES`` (a deployment's own, comma-separated import paths). Runs never import an
agent module by name, so the demo stays above the product (DESIGN.md §3).
"""

from __future__ import annotations

import importlib

from django.conf import settings

from agentops.runtime.context import AGENTS, AgentSpec


def load_agents() -> dict[str, AgentSpec]:
    """Import every agent module named in settings (each once) and return the registry (name → spec)."""
    for module in (*settings.AGENTOPS_BUILTIN_AGENT_MODULES, *settings.AGENTOPS_AGENT_MODULES):
        importlib.import_module(module)
    return AGENTS
