"""The ``agentops`` app's models live in their rooms; importing them here registers them under the app label
that the tables and migrations keep (agentops_provider, agentops_run, agentops_apikey, ...)."""

from agentops.config.models import FallbackRule, ModelRoute, Provider, RetryPolicy, RuntimeSettings
from agentops.gateway.models import StoredResponse
from agentops.keys.models import ApiKey
from agentops.runs.models import Agent, Run, Step, ToolEffect

__all__ = [
    "Agent",
    "ApiKey",
    "FallbackRule",
    "ModelRoute",
    "Provider",
    "RetryPolicy",
    "Run",
    "RuntimeSettings",
    "Step",
    "StoredResponse",
    "ToolEffect",
]
