"""The runtime's ``BudgetGate`` and ``UsageSink`` backed by budgets.actions (reservations, ledger), DESIGN.md §4
steps 3 and 5."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection

from budgets.actions import ledger, reservations
from budgets.models import UsageRecord


def _return_pooled_connection() -> None:
    """In a pooled process (the web: DB_POOL=1) give the connection back between the reservation and the
    settle: the provider call in between can take seconds, and a connection held idle through it would
    starve the pool under concurrency. Elsewhere (workers keep persistent connections) nothing happens."""
    if connection.pool is not None and not connection.in_atomic_block:
        connection.close()


class LedgerBudgetGate:
    """Reserve before every guarded call, settle (write the priced ledger row) after, release on failure."""

    def reserve(self, meta: Mapping[str, Any]) -> int | None:
        try:
            return reservations.reserve(meta)
        finally:
            _return_pooled_connection()

    def settle(self, handle: int | None, usage: Mapping[str, Any]) -> UsageRecord | None:
        """The priced ledger row (its ``cost_usd`` goes on the call's span); None when parked."""
        # handle None: no budget applied, the call is recorded in the ledger only
        return ledger.settle_durably(handle, usage)

    def release(self, handle: int | None) -> None:
        if handle is not None:
            reservations.release(handle)


class LedgerUsageSink:
    """Usage of calls that held no reservation (cache hits, human answers, calls no budget applied to)."""

    def record(self, usage: Mapping[str, Any]) -> UsageRecord | None:
        return ledger.settle_durably(None, usage)


BUDGET_GATE = LedgerBudgetGate()
USAGE_SINK = LedgerUsageSink()
