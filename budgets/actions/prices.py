"""Model prices: the row in force for a call, what a call costs, and setting or deleting a price row (the
price screen and the API call these)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from agentops.runtime.model_names import price_names
from budgets.actions.directory import cached_directory, directory_changed, save_to_directory
from budgets.models import ANY_MODEL, ModelPrice, UsageRecord

THOUSAND = Decimal(1000)
CENT_FRACTIONS = Decimal("0.00000001")


def price_in_force(model: str | Sequence[str], at: dt.datetime) -> ModelPrice | None:
    """The price row in force at ``at`` for the most specific of the names (a name, or the candidates of
    ``usage_price_names`` in order): a row listed under an earlier name wins; else the catch-all ``*`` row."""
    names = price_names(model) if isinstance(model, str) else list(model)
    in_force = ModelPrice.objects.filter(effective_from__lte=at).order_by("-effective_from")
    rows = {}
    for row in in_force.filter(model__in=[*names, ANY_MODEL]):
        rows.setdefault(row.model, row)  # newest first: the first seen per name is the one in force
    return next((rows[name] for name in [*names, ANY_MODEL] if name in rows), None)


def usage_price_names(usage: Mapping[str, Any]) -> list[str]:
    """The names a call may be priced under, most specific first: the model that answered (often dated:
    ``gpt-4o-2024-08-06``), the model asked for, the route's model, then each one without provider prefix
    and date or version suffix (DESIGN.md §7). Settling adds the reservation's model after them."""
    return price_names(
        str(usage.get("model") or ""), str(usage.get("requested_model") or ""), str(usage.get("route_model") or "")
    )


def quoted_cost(agent: str, usage: Mapping[str, Any]) -> Decimal:
    """What the settle will charge for ``usage`` at today's prices (the same names in the same order:
    ``usage_price_names``, the reservation's model, then ``*``), from the process's price directory, so an
    answer can say its cost before the ledger row is written. A cache hit costs nothing."""
    if usage.get("cache_hit"):
        return Decimal(0)
    names = [*usage_price_names(usage), *([str(usage["model_reserved"])] if usage.get("model_reserved") else [])]
    _, _, prices = cached_directory(agent, names)
    exact = (prices.get(name) for name in names)
    price = next((row for name, row in zip(names, exact, strict=True) if row is not None and row.model == name), None)
    if price is None:
        price = next((row for row in prices.values() if row is not None and row.model == ANY_MODEL), None)
    tokens = (int(usage.get(name) or 0) for name in ("input_tokens", "output_tokens", "cached_tokens"))
    return cost_of(price, *tokens)


def cost_of(price: ModelPrice | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> Decimal:
    """Dollars for a call: uncached input, cached input (its own price when set) and output tokens."""
    if price is None:
        return Decimal(0)
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    cached_price = price.cached_input_per_1k if price.cached_input_per_1k is not None else price.input_per_1k
    dollars = (
        Decimal(input_tokens - cached) * price.input_per_1k
        + Decimal(cached) * cached_price
        + Decimal(output_tokens) * price.output_per_1k
    ) / THOUSAND
    return dollars.quantize(CENT_FRACTIONS, rounding=ROUND_HALF_UP)


def set_price(
    model: str,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    *,
    cached_input_per_1k: Decimal | None = None,
    effective_from: dt.datetime | None = None,
    note: str = "",
    user: str = "",
) -> ModelPrice:
    """A new price for ``model`` from ``effective_from`` (default now). Earlier rows stay: calls already
    made keep the price they were charged, later calls get this one."""
    row = ModelPrice(
        model=model.strip(),
        input_per_1k=input_per_1k,
        output_per_1k=output_per_1k,
        cached_input_per_1k=cached_input_per_1k,
        effective_from=effective_from or timezone.now(),
        note=note,
        created_by=user,
    )
    return save_to_directory(row)


def delete_price(price_id: int) -> bool:
    """Delete a price row that no call was charged at (a mistyped future price, say)."""
    with transaction.atomic():
        row = ModelPrice.objects.filter(pk=price_id).first()
        if row is None or UsageRecord.objects.filter(price=row).exists():
            return False
        row.delete()
        transaction.on_commit(directory_changed)
        return True
