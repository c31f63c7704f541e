"""Default prices and budgets (DESIGN.md §7, §11). Idempotent; used by a data migration (historical
models) and by tests that flush the database."""

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from django.utils import timezone

# USD per 1K tokens: input, output, cached input (the public list prices of the demo models).
PRICES = [
    ("gpt-4o", Decimal("0.0025"), Decimal("0.0100"), Decimal("0.00125")),
    ("gpt-4o-mini", Decimal("0.00015"), Decimal("0.0006"), Decimal("0.000075")),
    ("*", Decimal("0.0010"), Decimal("0.0020"), None),
]
D = Decimal
# The seed document's table and the families people call today (gpt-4o and gpt-4o-mini are in PRICES), each
# from the date its provider's price took effect: (family, input, output, cached input or None, effective
# from). Prices match by family: a dated answer (gpt-4-0613) is priced by its family's row (budgets.actions.prices).
PRICE_TABLE = [
    ("gpt-4", D("0.03"), D("0.06"), None, "2023-03-14"),
    ("gpt-4-32k", D("0.06"), D("0.12"), None, "2023-03-14"),
    ("gpt-4-turbo", D("0.01"), D("0.03"), None, "2024-04-09"),
    ("gpt-3.5-turbo", D("0.001"), D("0.002"), None, "2023-11-06"),
    ("gpt-4.1", D("0.002"), D("0.008"), D("0.0005"), "2025-04-14"),
    ("gpt-4.1-mini", D("0.0004"), D("0.0016"), D("0.0001"), "2025-04-14"),
    ("gpt-4.1-nano", D("0.0001"), D("0.0004"), D("0.000025"), "2025-04-14"),
    ("o1", D("0.015"), D("0.06"), D("0.0075"), "2024-12-17"),
    ("o1-mini", D("0.0011"), D("0.0044"), D("0.00055"), "2024-12-17"),
    ("o3", D("0.002"), D("0.008"), D("0.0005"), "2025-06-10"),
    ("o3-mini", D("0.0011"), D("0.0044"), D("0.00055"), "2025-01-31"),
    ("o4-mini", D("0.0011"), D("0.0044"), D("0.000275"), "2025-04-16"),
    ("claude-3-opus", D("0.015"), D("0.075"), D("0.0015"), "2024-03-04"),
    ("claude-3-haiku", D("0.00025"), D("0.00125"), D("0.00003"), "2024-03-13"),
    ("claude-3-5-sonnet", D("0.003"), D("0.015"), D("0.0003"), "2024-06-20"),
    ("claude-3-5-haiku", D("0.0008"), D("0.004"), D("0.00008"), "2024-11-04"),
    ("claude-3-7-sonnet", D("0.003"), D("0.015"), D("0.0003"), "2025-02-24"),
    ("claude-sonnet-4", D("0.003"), D("0.015"), D("0.0003"), "2025-05-22"),
    ("claude-opus-4", D("0.015"), D("0.075"), D("0.0015"), "2025-05-22"),
    ("claude-sonnet-4-5", D("0.003"), D("0.015"), D("0.0003"), "2025-09-29"),
    ("claude-haiku-4-5", D("0.001"), D("0.005"), D("0.0001"), "2025-10-15"),
    # Embedding models: input tokens only (budgets.migrations.0008_embedding_prices adds them to older installs).
    ("text-embedding-3-small", D("0.00002"), D("0"), None, "2024-01-25"),
    ("text-embedding-3-large", D("0.00013"), D("0"), None, "2024-01-25"),
    ("text-embedding-ada-002", D("0.0001"), D("0"), None, "2023-06-13"),
]


def seed_price_table(get_model: Callable[[str, str], type], rows: list[tuple] | None = None) -> None:
    """Add ``rows`` (default: ``PRICE_TABLE``) beside the rows already there (idempotent: one row per model and
    date)."""
    ModelPrice = get_model("budgets", "ModelPrice")
    for model, input_price, output_price, cached_price, since in PRICE_TABLE if rows is None else rows:
        effective = dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC)
        ModelPrice.objects.get_or_create(
            model=model,
            effective_from=effective,
            defaults={
                "input_per_1k": input_price,
                "output_per_1k": output_price,
                "cached_input_per_1k": cached_price,
                "note": "seed price table",
                "created_by": "seed",
            },
        )


OPERATION_LIMITS = {"planning": 1000, "tool_calls": 2000, "response": 1500, "reflection": 500}
DAILY_NAME, SESSION_NAME = "Daily (all agents)", "Per session"


def seed_budget_defaults(get_model: Callable[[str, str], type]) -> None:
    ModelPrice = get_model("budgets", "ModelPrice")
    Budget = get_model("budgets", "Budget")
    AlertSettings = get_model("budgets", "AlertSettings")
    since = timezone.now().replace(year=2024, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    for model, input_price, output_price, cached_price in PRICES:
        if not ModelPrice.objects.filter(model=model).exists():
            ModelPrice.objects.create(
                model=model,
                input_per_1k=input_price,
                output_per_1k=output_price,
                cached_input_per_1k=cached_price,
                effective_from=since,
                note="seed",
                created_by="seed",
            )
    Budget.objects.get_or_create(
        name=DAILY_NAME,
        defaults={
            "scope": "global",
            "period": "day",
            "timezone": "UTC",
            "limit_tokens": 100_000,
            "soft_threshold_pct": 80,
            "hard_stop": True,
            "operation_limits": OPERATION_LIMITS,
            "on_block": "escalate",
        },
    )
    Budget.objects.get_or_create(
        name=SESSION_NAME,
        defaults={
            "scope": "session",
            "period": "lifetime",
            "timezone": "UTC",
            "limit_tokens": 5_000,
            "soft_threshold_pct": 80,
            "hard_stop": True,
            "on_block": "fail",
        },
    )
    AlertSettings.objects.get_or_create(pk=1)
    seed_price_table(get_model)
