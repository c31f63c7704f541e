"""When a budget's current period starts and ends (day and month in the budget's own time zone)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from budgets.models import Budget

LIFETIME_START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def period_start(budget: Budget, now: dt.datetime) -> dt.datetime:
    """The start of the budget's current period: local midnight (day), the 1st (month) in the budget's
    time zone, or a fixed instant (lifetime)."""
    if budget.period == Budget.Period.LIFETIME:
        return LIFETIME_START
    local = now.astimezone(zoneinfo.ZoneInfo(budget.timezone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == Budget.Period.MONTH:
        start = start.replace(day=1)
    # Re-attach the zone so a DST change between midnight and now gives midnight's own offset.
    return start.replace(tzinfo=None).replace(tzinfo=zoneinfo.ZoneInfo(budget.timezone)).astimezone(dt.UTC)


def period_end(budget: Budget, now: dt.datetime) -> dt.datetime | None:
    """When the budget's current period ends (the next one starts); None for a lifetime budget."""
    if budget.period == Budget.Period.LIFETIME:
        return None
    zone = zoneinfo.ZoneInfo(budget.timezone)
    start = period_start(budget, now).astimezone(zone).replace(tzinfo=None)
    if budget.period == Budget.Period.DAY:
        end = start + dt.timedelta(days=1)
    else:
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return end.replace(tzinfo=zone).astimezone(dt.UTC)
