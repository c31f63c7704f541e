"""The demo's plain-OpenAI-SDK agent: no agent function, it only calls the /v1 gateway (demo traffic plays it
with agentops/demo/traffic.py's AppAgent). Not an agent module: nothing registers here."""

from __future__ import annotations

from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Agent

GATEWAY_DEMO_AGENT = "openai-sdk"


def ensure_gateway_demo_agent() -> Agent:
    """The demo's plain-OpenAI-SDK agent (no agent function: it only calls the gateway). Created with its
    sensitive tool calls annotated rather than held, so demo traffic never waits on a reviewer; an admin's
    later choice is kept."""
    existed = Agent.objects.filter(name=GATEWAY_DEMO_AGENT).exists()
    agent = agent_actions.ensure_agent(
        GATEWAY_DEMO_AGENT,
        description="A support assistant written against the plain openai SDK, pointed at the /v1 gateway.",
        team="product",
    )
    if not existed:
        # No action sets this field yet; a single-field update on the row just created.
        agent.gateway_tool_review = Agent.ToolReview.ANNOTATE
        agent.save(update_fields=["gateway_tool_review"])
    return agent
