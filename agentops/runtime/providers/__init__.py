"""LLM providers: the contract, the OpenAI-compatible SDK provider, the simulated one and the rule engine."""

from agentops.runtime.providers.base import (
    LLMRequest,
    LLMResult,
    Provider,
    content_text,
    estimate_prompt_tokens,
    estimate_tokens,
)
from agentops.runtime.providers.openai_compat import OpenAICompatProvider
from agentops.runtime.providers.rules import Rule, RuleEngine
from agentops.runtime.providers.simulated import SimulatedProvider, simulated_answer

__all__ = [
    "LLMRequest",
    "LLMResult",
    "OpenAICompatProvider",
    "Provider",
    "Rule",
    "RuleEngine",
    "SimulatedProvider",
    "content_text",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "simulated_answer",
]
