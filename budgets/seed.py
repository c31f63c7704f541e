"""Default prices and budgets (DESIGN.md §7, §11). Idempotent; used by a data migration (historical
models) and by tests that flush the database."""

from collections.abc import Callable
from decimal import Decimal

from django.utils import timezone

# USD per 1K tokens: input, output, cached input (the public list prices of the demo models).
PRICES = [
    ("gpt-4o", Decimal("0.0025"), Decimal("0.0100"), Decimal("0.00125")),
    ("gpt-4o-mini", Decimal("0.00015"), Decimal("0.0006"), Decimal("0.000075")),
    ("*", Decimal("0.0010"), Decimal("0.0020"), None),
]
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
