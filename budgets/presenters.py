"""How a ledger row's price is shown: which price row applied to the call, on the costs and run screens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from budgets.models import ANY_MODEL, UsageRecord


def price_label(record: UsageRecord) -> str:
    """The row the call was priced with ("gpt-4 from 2023-03-14 · $0.03 / $0.06 per 1K"), or why none."""
    if record.cached:
        return "cache hit (free)"
    price = record.price
    if price is None:
        return "no price row (free)"
    name = "catch-all *" if price.model == ANY_MODEL else price.model
    rates = f"${price.input_per_1k.normalize():f} / ${price.output_per_1k.normalize():f} per 1K"
    if price.cached_input_per_1k is not None:
        rates += f" (cached ${price.cached_input_per_1k.normalize():f})"
    return f"{name} from {price.effective_from:%Y-%m-%d} · {rates}"


def call_row(record: UsageRecord) -> dict[str, Any]:
    """One ledger row for a table (JSON-ready): the model that answered and the price row that applied."""
    return {
        "id": record.pk,
        "at": record.created_at.isoformat(),
        "agent": record.agent,
        "run_id": record.run_id,
        "step": record.step,
        "operation": record.operation,
        "model": record.model,
        "price_id": record.price_id,
        "priced_as": price_label(record),
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cached_tokens": record.cached_tokens,
        "usd": float(record.cost_usd),
        "source": record.source,
    }


def call_rows(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    return [call_row(record) for record in records]
