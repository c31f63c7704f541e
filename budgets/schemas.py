"""The request and response shapes of the budgets API (budgets/api.py): usage, reservations, what is left of
the budgets, and budgets and prices as code. Amounts of money go out as decimal strings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.utils import timezone
from ninja import Field, Schema
from pydantic import AfterValidator

from agentops.api.schemas import MAX_ID, Text

MAX_TOKENS = 2**31 - 1  # the ledger's token columns are 32-bit integers


# --- input types -------------------------------------------------------------------------------------


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """An instant PostgreSQL and Python can both hold (a far-future time with an offset can overflow)."""
    if value is None:
        return None
    try:
        return value.astimezone(dt.UTC) if timezone.is_aware(value) else value.replace(tzinfo=dt.UTC)
    except (OverflowError, ValueError):
        raise ValueError("the time is out of range") from None


Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Instant = Annotated[dt.datetime, AfterValidator(_utc)]
Scope = Literal["global", "team", "agent", "session"]
Period = Literal["day", "month", "lifetime"]
OnBlock = Literal["escalate", "fail"]
OperationLimits = dict[Text, Annotated[int, Field(le=MAX_ID)]]


# --- schemas -----------------------------------------------------------------------------------------


class BudgetRemaining(Schema):
    budget: str
    scope: Scope
    subject: str = Field(..., description="The counter this caller spends from: team, agent or session; '' = global")
    period: Period
    period_end: dt.datetime | None = Field(..., description="When the current period ends (null for lifetime)")
    limit_tokens: int | None
    limit_usd: str | None
    spent_tokens: int
    spent_usd: str
    reserved_tokens: int
    reserved_usd: str
    remaining_tokens: int | None = Field(..., description="limit - spent - reserved, never below 0; null: no limit")
    remaining_usd: str | None
    hard_stop: bool


class BudgetsOut(Schema):
    items: list[BudgetRemaining]


class UsageIn(Schema):
    session_id: Text = Field("", max_length=200)
    model: Text = Field(..., min_length=1, max_length=120, description='Priced by its own row, else the "*" row')
    operation: Text = Field(..., min_length=1, max_length=100)
    input_tokens: Tokens
    output_tokens: Tokens
    cached_tokens: Tokens = Field(0, description="Input tokens served from the provider's cache (≤ input_tokens)")
    run_id: int | None = Field(None, ge=1, le=MAX_ID, description="One of this agent's runs")


class UsageOut(Schema):
    id: int
    cost_usd: str
    remaining: list[BudgetRemaining]


class ReservationIn(Schema):
    session_id: Text = Field("", max_length=200)
    model: Text = Field(..., min_length=1, max_length=120)
    operation: Text = Field(..., min_length=1, max_length=100)
    estimated_input_tokens: Tokens
    estimated_output_tokens: Tokens
    lease_seconds: float | None = Field(None, ge=1, le=3600, description="Default: the server's lease (5 min)")


class ReservationOut(Schema):
    id: int | None = Field(..., description="null when no budget applies (nothing to settle or release)")
    expires_at: dt.datetime | None
    tokens: int
    usd: str
    note: str | None = None


class SettleIn(Schema):
    input_tokens: Tokens
    output_tokens: Tokens
    cached_tokens: Tokens = 0
    model: Text | None = Field(None, min_length=1, max_length=120, description="Default: the reserved model")


class SettleOut(Schema):
    usage_id: int
    cost_usd: str
    remaining: list[BudgetRemaining]


class ReleaseOut(Schema):
    released: bool = Field(..., description="false when it was no longer held (settled, released or expired)")


class BudgetIn(Schema):
    name: Text = Field(..., max_length=100)
    scope: Scope = "global"
    scope_key: Text = Field("", max_length=200, description="team, agent or session id; blank = each one")
    period: Period = "day"
    timezone: Text | None = Field(None, max_length=64, description="Default: the server's BUDGET_TIMEZONE")
    limit_tokens: int | None = Field(None, le=MAX_ID)
    limit_usd: Decimal | None = None
    soft_threshold_pct: int = Field(80, ge=1, le=100)
    hard_stop: bool = True
    operation_limits: OperationLimits = Field(default_factory=dict, description='{"planning": 1000, …}')
    downgrade_model: Text = Field("", max_length=120)
    on_block: OnBlock = "escalate"
    enabled: bool = True


class BudgetChange(Schema):
    """Only the fields sent change."""

    name: Text | None = Field(None, max_length=100)
    scope: Scope | None = None
    scope_key: Text | None = Field(None, max_length=200)
    period: Period | None = None
    timezone: Text | None = Field(None, max_length=64)
    limit_tokens: int | None = Field(None, le=MAX_ID)
    limit_usd: Decimal | None = None
    soft_threshold_pct: int | None = Field(None, ge=1, le=100)
    hard_stop: bool | None = None
    operation_limits: OperationLimits | None = None
    downgrade_model: Text | None = Field(None, max_length=120)
    on_block: OnBlock | None = None
    enabled: bool | None = None


class BudgetOut(Schema):
    id: int
    name: str
    scope: Scope
    scope_key: str
    period: Period
    timezone: str
    limit_tokens: int | None
    limit_usd: str | None
    soft_threshold_pct: int
    hard_stop: bool
    operation_limits: dict[str, Any]
    downgrade_model: str
    on_block: OnBlock
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class BudgetList(Schema):
    items: list[BudgetOut]
    count: int


class PriceIn(Schema):
    model: Text = Field(..., max_length=120, description='Model name, or "*" for every model without its own price')
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None = Field(None, description="null = the input price")
    effective_from: Instant | None = Field(None, description="Default now; never in the past")
    note: Text = Field("", max_length=200)


class PriceOut(Schema):
    id: int
    model: str
    input_per_1k: str
    output_per_1k: str
    cached_input_per_1k: str | None
    effective_from: dt.datetime
    in_force: bool = Field(..., description="The row that prices this model's calls now")
    note: str
    created_by: str
    created_at: dt.datetime


class PriceList(Schema):
    items: list[PriceOut]
    count: int
