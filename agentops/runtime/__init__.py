"""The resilience core: pure Python, no Django import (DESIGN.md §3, §4).

The names most callers need are re-exported here; everything else lives in its module.
"""

from agentops.runtime.config import DEFAULT_CONFIG, CachedConfigSource, ConfigSource, RuntimeConfig, StaticConfigSource
from agentops.runtime.errors import ErrorCategory, ErrorClass, FallbackExhausted, ProviderError, classify
from agentops.runtime.guard import GuardDeps, GuardResult, guarded_llm
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable, HandoffOutcome, HumanPending, HumanRejected
from agentops.runtime.providers import LLMRequest, LLMResult, Provider

__all__ = [
    "DEFAULT_CONFIG",
    "BudgetExceeded",
    "BudgetUnavailable",
    "CachedConfigSource",
    "ConfigSource",
    "ErrorCategory",
    "ErrorClass",
    "FallbackExhausted",
    "GuardDeps",
    "GuardResult",
    "HandoffOutcome",
    "HumanPending",
    "HumanRejected",
    "LLMRequest",
    "LLMResult",
    "Provider",
    "ProviderError",
    "RuntimeConfig",
    "StaticConfigSource",
    "classify",
    "guarded_llm",
]
