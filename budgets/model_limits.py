"""How many tokens one call of a model can use: the bound on usage an agent reports itself.

Usage reported over the REST API (``POST /api/v1/usage``, a settle) is the agent's own word and is charged
to shared budgets, so a report no call could produce (the issue's 2,000,000,000 tokens) is refused rather
than charged. A known model allows its context window of input and its output limit; any other model the
configured ceiling (``AGENTOPS_USAGE_REPORT_MAX_TOKENS``) in total.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from agentops.runtime.model_names import base_model_name


@dataclass(frozen=True)
class TokenLimit:
    """What one call may use: ``input`` and ``output`` each, or only a ``total`` (an unknown model)."""

    total: int
    input: int | None = None
    output: int | None = None
    model: str = ""  # the family the limits are known for; "" = the configured ceiling


def token_limit(model: str) -> TokenLimit:
    """The most specific known family whose name the model's starts with (at a "-" or the end:
    "gpt-4o-mini-2024-07-18" is "gpt-4o-mini", never "gpt-4"), else the configured ceiling."""
    name = base_model_name(model)  # without provider prefix, date or version suffix, case
    known: dict[str, tuple[int, int]] = settings.AGENTOPS_MODEL_TOKEN_LIMITS
    matches = [f for f in known if name == f or name.startswith(f + "-")]
    if not matches:
        return TokenLimit(total=settings.AGENTOPS_USAGE_REPORT_MAX_TOKENS)
    best = max(matches, key=len)
    context, output = known[best]
    return TokenLimit(total=context + output, input=context, output=output, model=best)


def excess(model: str, input_tokens: int, output_tokens: int) -> tuple[str, int, str] | None:
    """(field, limit, sentence) for a report one call of ``model`` cannot produce, else None."""
    limit = token_limit(model)
    values = {"model": model, "input": input_tokens, "output": output_tokens, "total": limit.total}
    if limit.input is not None and input_tokens > limit.input:
        message = _(
            "input_tokens (%(input)s) is more than one %(model)s call can read: its context window is "
            "%(window)s tokens (a call uses at most %(total)s tokens in all)"
        )
        return "input_tokens", limit.total, message % {**values, "window": limit.input}
    if limit.output is not None and output_tokens > limit.output:
        message = _(
            "output_tokens (%(output)s) is more than one %(model)s call can write: at most %(most)s "
            "(a call uses at most %(total)s tokens in all)"
        )
        return "output_tokens", limit.total, message % {**values, "most": limit.output}
    if input_tokens + output_tokens > limit.total:
        field = "input_tokens" if input_tokens > limit.total else "output_tokens"
        message = _(
            "input_tokens + output_tokens (%(sum)s) is more than one call may report: at most %(total)s tokens "
            "for a model without a known limit (AGENTOPS_USAGE_REPORT_MAX_TOKENS)"
        )
        return field, limit.total, message % {**values, "sum": input_tokens + output_tokens}
    return None
