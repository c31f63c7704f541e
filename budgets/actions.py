"""The only code that changes budgets, prices, counters, reservations, the usage ledger and alerts.

Store: PostgreSQL row locks (chosen by measurement, see tests/bench/bench_budgets.py and the README).
A reservation locks the counter rows of every budget that applies, in id order (no deadlocks), checks
each hard limit against spent + reserved + the estimate, and either adds the estimate to all of them or
to none. Settle swaps the estimate for the actual usage and writes the ledger row in the same
transaction, so "reserved == actual after settle" is one commit, not a promise. If PostgreSQL cannot be
reached the call is refused with ``BudgetUnavailable`` (fail closed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from agentops.lib.db import discard_connection
from agentops.observability import metrics
from agentops.runtime.model_names import price_names
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from budgets.models import (
    ANY_MODEL,
    Alert,
    AlertSettings,
    Budget,
    BudgetCounter,
    ModelPrice,
    Reservation,
    UsageRecord,
    Webhook,
    WebhookDelivery,
)

log = structlog.get_logger(__name__)

THOUSAND = Decimal(1000)
CENT_FRACTIONS = Decimal("0.00000001")
LIFETIME_START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
STORE_ERRORS = (OperationalError, InterfaceError)


# --- periods and prices ----------------------------------------------------------------------------


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
    if budget.period == Budget.Period.LIFETIME:
        return None
    zone = zoneinfo.ZoneInfo(budget.timezone)
    start = period_start(budget, now).astimezone(zone).replace(tzinfo=None)
    if budget.period == Budget.Period.DAY:
        end = start + dt.timedelta(days=1)
    else:
        end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return end.replace(tzinfo=zone).astimezone(dt.UTC)


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


# --- which budgets apply -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is spending: the subjects that budgets are keyed by."""

    agent: str = ""
    team: str = ""
    session_id: str = ""
    run_id: int | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Caller:
        agent = str(meta.get("agent") or "")
        run = meta.get("run") if meta.get("run") is not None else meta.get("run_id")
        team = str(meta.get("team") or "")  # else the agent's own team, read with the budgets
        session = str(meta.get("session") or meta.get("session_id") or "")
        return cls(agent=agent, team=team, session_id=session, run_id=_int_or_none(run))


# Every enabled budget, the agent's team and the prices in force for the given models, in ONE statement
# (the PL/pgSQL function of migration 0006; JSON text, numbers parsed as Decimal): the budget and price
# tables are small and read on every call.
_DIRECTORY = "SELECT budgets_directory(%(agent)s, %(models)s, %(at)s)"
_BUDGET_FIELDS = [
    "id",
    "name",
    "scope",
    "scope_key",
    "period",
    "timezone",
    "limit_tokens",
    "limit_usd",
    "soft_threshold_pct",
    "hard_stop",
    "operation_limits",
    "downgrade_model",
    "on_block",
]


# The directory is read on every reservation; a process reuses its last read for the same agent and models
# while the budgets version in Redis (bumped after every budget, price or team change commits) is the same
# and for at most DIRECTORY_TTL seconds (a price scheduled to start applies to estimates within that; the
# ledger is priced in the settle statement itself). One Redis GET instead of a PostgreSQL query; without
# Redis every reservation reads PostgreSQL.
DIRECTORY_VERSION_KEY = "agentops:budgets:version"
DIRECTORY_TTL = 1.0
_directory_cache: dict[tuple[str, tuple[str, ...]], tuple[float, bytes, Any]] = {}


def directory_changed() -> None:
    """Call after a change to budgets, prices or agent teams commits: every process re-reads."""
    _directory_cache.clear()
    try:
        from agentops.lib.redis import runtime_redis

        runtime_redis().incr(DIRECTORY_VERSION_KEY)
    except Exception as exc:  # the TTL bounds how long other processes keep their copy
        log.warning("budgets.directory_version_unavailable", error=repr(exc)[:200])


def _cached_directory(agent: str, models: Iterable[str]) -> tuple[list[Budget], str, dict[str, ModelPrice | None]]:
    wanted = tuple(dict.fromkeys(models))
    try:
        from agentops.lib.redis import runtime_redis

        version = runtime_redis().get(DIRECTORY_VERSION_KEY) or b"0"
    except Exception:
        return _directory(agent, wanted)
    key = (agent, wanted)
    now = time.monotonic()
    hit = _directory_cache.get(key)
    if hit is not None and hit[0] > now and hit[1] == version:
        return hit[2]
    found = _directory(agent, wanted)
    if len(_directory_cache) > 10_000:  # many agents × model sets: start over rather than grow
        _directory_cache.clear()
    _directory_cache[key] = (now + DIRECTORY_TTL, version, found)
    return found


def _directory(
    agent: str, models: Iterable[str] = (), at: dt.datetime | None = None
) -> tuple[list[Budget], str, dict[str, ModelPrice | None]]:
    """(enabled budgets in id order, the agent's team, the price in force at ``at`` for each model)."""
    wanted = list(dict.fromkeys(models))
    candidates = {model: price_names(model) for model in wanted}
    names = list(dict.fromkeys(name for names in candidates.values() for name in names))
    with connection.cursor() as cursor:
        cursor.execute(_DIRECTORY, {"agent": agent, "models": [*names, ANY_MODEL], "at": at or timezone.now()})
        budgets_json, team, prices_json = cursor.fetchone()[0]
    budgets = [
        Budget(**dict(zip(_BUDGET_FIELDS, row, strict=True)), enabled=True)
        for row in json.loads(budgets_json, parse_float=Decimal)
    ]
    for budget in budgets:  # JSON numbers: whole dollars come back as int
        if budget.limit_usd is not None:
            budget.limit_usd = Decimal(budget.limit_usd)
    found = {
        row[1]: ModelPrice(
            id=row[0],
            model=row[1],
            input_per_1k=Decimal(row[2]),
            output_per_1k=Decimal(row[3]),
            cached_input_per_1k=Decimal(row[4]) if row[4] is not None else None,
        )
        for row in json.loads(prices_json, parse_float=Decimal)
    }
    return budgets, team or "", {m: _most_specific(found, candidates[m]) for m in wanted}


def _most_specific(found: Mapping[str, ModelPrice], names: Sequence[str]) -> ModelPrice | None:
    return next((found[name] for name in [*names, ANY_MODEL] if name in found), None)


SUBJECT_MAX = 200  # BudgetCounter.subject's column
SESSION_SEPARATOR = "/"  # agent names are slugs, so the first "/" of a session subject ends the agent


def session_subject(agent: str, session_id: str) -> str:
    """The counter subject of a session budget: the session *of one agent*, "<agent>/<session>". A session id
    is the caller's own label (X-Session-Id, a run's session), so two agents may pick the same one; keyed by
    the id alone, agent A could spend agent B's session budget. A subject too long for the column keeps the
    agent and a SHA-256 of the session id (distinct sessions never share a counter)."""
    subject = f"{agent}{SESSION_SEPARATOR}{session_id}"
    if len(subject) <= SUBJECT_MAX:
        return subject
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{agent[: SUBJECT_MAX - 72]}{SESSION_SEPARATOR}sha256:{digest}"


def subject_parts(budget: Budget, subject: str) -> tuple[str, str]:
    """(agent, session) of a session budget's counter subject; ("", subject) for any other scope."""
    if budget.scope != Budget.Scope.SESSION or SESSION_SEPARATOR not in subject:
        return "", subject
    agent, _, session = subject.partition(SESSION_SEPARATOR)
    return agent, session


def subject_label(budget: Budget, subject: str) -> str:
    """A counter subject as the screens show it ("session s1 of agent research" for a session budget)."""
    agent, session = subject_parts(budget, subject)
    if not agent:
        return subject
    return gettext("session %(session)s of agent %(agent)s") % {"session": session, "agent": agent}


def subject_for(budget: Budget, caller: Caller) -> str | None:
    """The counter subject this budget keeps for the caller, or None if the budget does not apply. A
    session budget's ``scope_key`` names a session id (every agent's session of that id, each counted
    separately)."""
    if budget.scope == Budget.Scope.GLOBAL:
        return ""
    value = {
        Budget.Scope.TEAM: caller.team,
        Budget.Scope.AGENT: caller.agent,
        Budget.Scope.SESSION: caller.session_id,
    }[budget.scope]
    if not value or (budget.scope_key and budget.scope_key != value):
        return None
    if budget.scope == Budget.Scope.SESSION:
        return session_subject(caller.agent, value)
    return value


def applicable_budgets(caller: Caller) -> list[tuple[Budget, str]]:
    """(budget, counter subject) for every enabled budget that applies to the caller, in id order."""
    budgets, team, _ = _directory(caller.agent)
    return _applicable(budgets, team, caller)


def _applicable(budgets: list[Budget], team: str, caller: Caller) -> list[tuple[Budget, str]]:
    if not caller.team and team:
        caller = dataclasses.replace(caller, team=team)
    return [(budget, subject) for budget in budgets if (subject := subject_for(budget, caller)) is not None]


def _refusal(budget: Budget, message: str) -> BudgetExceeded:
    metrics.BUDGET_REJECTIONS.labels(scope=budget.scope).inc()
    return BudgetExceeded(
        budget.name,
        message,
        cheaper_model=budget.downgrade_model or None,
        escalate=budget.on_block == Budget.OnBlock.ESCALATE,
    )


def _describe(budget: Budget, subject: str) -> str:
    if subject_parts(budget, subject)[0]:
        where = f" for {subject_label(budget, subject)}"
    else:
        where = f" for {budget.scope} {subject}" if subject else ""
    return f'budget "{budget.name}"{where} ({budget.period})'


# --- counters (raw SQL on the hot path: one statement per step while the locks are held) -------------

_ENSURE_COUNTERS = """
INSERT INTO budgets_budgetcounter
    (budget_id, subject, period_start, spent_tokens, spent_usd, reserved_tokens, reserved_usd, in_flight, updated_at)
SELECT b, s, p, 0, 0, 0, 0, 0, now() FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS k(b, s, p)
ON CONFLICT (budget_id, subject, period_start) DO NOTHING
"""
_LOCK_COUNTERS = """
SELECT c.id, c.budget_id, c.subject, c.period_start, c.spent_tokens, c.spent_usd, c.reserved_tokens, c.reserved_usd
FROM budgets_budgetcounter c
JOIN unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS k(b, s, p)
  ON c.budget_id = k.b AND c.subject = k.s AND c.period_start = k.p
ORDER BY c.id FOR UPDATE OF c
"""
_LOCK_COUNTERS_BY_ID = """
SELECT id, budget_id, subject, period_start, spent_tokens, spent_usd, reserved_tokens, reserved_usd
FROM budgets_budgetcounter WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE
"""
# Lock the counters of every key in id order, check every hard limit, and hold the estimate on all of them
# (and record the reservation) or on none, in ONE statement (the PL/pgSQL function of migration 0006): in
# autocommit the row locks are held inside PostgreSQL for one statement, never across a client round
# trip. It returns {"id": reservation or null, "complete": false when a counter row does not exist yet,
# "rows": every locked counter with the values checked, so a refusal can name the budget}.
_HOLD = """
SELECT budgets_hold(%(b)s, %(s)s, %(p)s, %(hard)s, %(lt)s, %(lu)s, %(n)s, %(tokens)s, %(usd)s, %(agent)s,
                    %(run_id)s, %(session_id)s, %(model)s, %(operation)s, %(expires_at)s, %(now)s)::text
"""
_APPLY_TO_COUNTERS = """
UPDATE budgets_budgetcounter
SET spent_tokens = spent_tokens + %(spent_tokens)s, spent_usd = spent_usd + %(spent_usd)s,
    reserved_tokens = reserved_tokens - %(held_tokens)s, reserved_usd = reserved_usd - %(held_usd)s,
    in_flight = in_flight - %(held_count)s, updated_at = now()
WHERE id = ANY(%(ids)s::bigint[])
"""


@dataclass
class CounterRow:
    id: int
    budget_id: int
    subject: str
    period_start: dt.datetime
    spent_tokens: int
    spent_usd: Decimal
    reserved_tokens: int
    reserved_usd: Decimal


def _lock_counters(cursor, keys: list[tuple[Budget, str, dt.datetime]]) -> list[CounterRow]:
    """Create (if new) and lock the counters for ``keys`` in id order."""
    columns = ([b.id for b, _, _ in keys], [s for _, s, _ in keys], [p for _, _, p in keys])
    cursor.execute(_ENSURE_COUNTERS, columns)
    cursor.execute(_LOCK_COUNTERS, columns)
    return [CounterRow(*row) for row in cursor.fetchall()]


def _lock_counters_by_id(cursor, ids: Iterable[int]) -> list[CounterRow]:
    cursor.execute(_LOCK_COUNTERS_BY_ID, [list(ids)])
    return [CounterRow(*row) for row in cursor.fetchall()]


# --- reserve / settle / release / reclaim ------------------------------------------------------------


def _fail_closed(exc: BaseException) -> BudgetUnavailable:
    log.error("budget.store_unavailable", error=str(exc)[:300])
    return BudgetUnavailable(f"the budget store (PostgreSQL) is unreachable, so no call is admitted: {exc}")


def reserve(
    meta: Mapping[str, Any], *, lease_seconds: float | None = None, now: dt.datetime | None = None
) -> int | None:
    """Hold the estimate against every budget that applies, all or nothing; return the reservation id
    (None when no budget applies). Raises ``BudgetExceeded`` naming the budget that blocks, or
    ``BudgetUnavailable`` when the store cannot be reached. ``now`` (default: the current time) picks the
    period and the price."""
    try:
        return _reserve(meta, lease_seconds, now)
    except STORE_ERRORS as exc:
        raise _fail_closed(exc) from exc


def _reserve(meta: Mapping[str, Any], lease_seconds: float | None, now: dt.datetime | None = None) -> int | None:
    at_present = now is None
    now = now or timezone.now()
    caller = Caller.from_meta(meta)
    operation = str(meta.get("operation") or "")
    model = str(meta.get("model") or "")
    est_in = max(int(meta.get("estimated_input_tokens") or 0), 0)
    est_out = max(int(meta.get("estimated_output_tokens") or 0), 0)
    tokens = max(int(meta.get("estimated_tokens") or est_in + est_out), 0)

    # Priced at the dearest model that may answer on this reservation (the guard lists its fallback chain).
    models = [model, *(str(m) for m in (meta.get("models") or ()) if m)]
    if at_present:
        every_budget, team, prices = _cached_directory(caller.agent, models)
    else:  # a reservation dated in the past or future (tests, backfills) reads the prices of that time
        every_budget, team, prices = _directory(caller.agent, models, now)
    budgets = _applicable(every_budget, team, caller)
    for budget, subject in budgets:
        per_call = (budget.operation_limits or {}).get(operation)
        if per_call is not None and tokens > int(per_call):
            raise _refusal(
                budget,
                f"{_describe(budget, subject)} allows at most {per_call} tokens per {operation} call; "
                f"this call would use up to {tokens}",
            )
    limited = [(b, s) for b, s in budgets if b.limit_tokens is not None or b.limit_usd is not None]
    if not limited:
        return None
    # Tokens given only as a total (not split into input and output) are priced as output, the dearer kind.
    unsplit = max(tokens - est_in - est_out, 0)
    usd = max(cost_of(price, est_in, est_out + unsplit) for price in prices.values())
    keys = [(b, s, period_start(b, now)) for b, s in limited]
    by_key = {(b.id, s): b for b, s, _ in keys}
    lease = lease_seconds if lease_seconds is not None else settings.BUDGET_RESERVATION_LEASE_SECONDS
    params = {
        "b": [b.id for b, _, _ in keys],
        "s": [s for _, s, _ in keys],
        "p": [p for _, _, p in keys],
        "hard": [b.hard_stop for b, _, _ in keys],
        "lt": [b.limit_tokens for b, _, _ in keys],
        "lu": [b.limit_usd for b, _, _ in keys],
        "n": len(keys),
        "tokens": tokens,
        "usd": usd,
        "agent": caller.agent[:80],
        "run_id": caller.run_id,
        "session_id": caller.session_id[:200],
        "model": model[:120],
        "operation": operation[:100],
        "expires_at": now + dt.timedelta(seconds=lease),
        "now": now,
    }
    with connection.cursor() as cursor:
        outcome = _hold(cursor, params)
        if outcome["id"] is not None:
            return outcome["id"]
        if not outcome["complete"]:  # a counter of this period does not exist yet: create, then hold
            cursor.execute(_ENSURE_COUNTERS, (params["b"], params["s"], params["p"]))
            outcome = _hold(cursor, params)
            if outcome["id"] is not None:
                return outcome["id"]
    counters = [
        CounterRow(c, b, subject, dt.datetime.fromisoformat(start), int(st), Decimal(su), int(rt), Decimal(ru))
        for c, b, subject, start, st, su, rt, ru in outcome["rows"]
    ]
    for counter in counters:
        budget = by_key[(counter.budget_id, counter.subject)]
        refusal = _refusal_if_no_room(budget, counter, tokens, usd) if budget.hard_stop else None
        if refusal is not None:
            _alert_exhausted(budget, counter)
            raise refusal
    raise BudgetUnavailable("the budget counters changed while reserving; try again")


def _hold(cursor, params: dict) -> dict:
    cursor.execute(_HOLD, params)
    return json.loads(cursor.fetchone()[0], parse_float=Decimal)


def _refusal_if_no_room(budget: Budget, counter: CounterRow, tokens: int, usd: Decimal) -> BudgetExceeded | None:
    """The refusal if the estimate does not fit under the hard limit (spent + reserved + estimate)."""
    where = _describe(budget, counter.subject)
    if budget.limit_tokens is not None:
        left = budget.limit_tokens - counter.spent_tokens - counter.reserved_tokens
        if tokens > left:
            return _refusal(
                budget,
                f"{where} has {max(left, 0)} of {budget.limit_tokens} tokens left; this call needs up to {tokens}",
            )
    if budget.limit_usd is not None:
        left_usd = budget.limit_usd - counter.spent_usd - counter.reserved_usd
        if usd > left_usd:
            return _refusal(
                budget,
                f"{where} has ${max(left_usd, Decimal(0)):.4f} of ${budget.limit_usd} left; "
                f"this call may cost up to ${usd:.4f}",
            )
    return None


def _limits(budget: Budget) -> str:
    return f"{budget.limit_tokens or '-'}t/{budget.limit_usd or '-'}usd"


def _counter_key(kind: str, budget: Budget, subject: str, start: dt.datetime) -> str:
    """One alert per kind × budget × subject × period × limits: raising a limit re-arms the alert."""
    return f"{kind}:{budget.id}:{subject}:{start.isoformat()}:{_limits(budget)}"


def _alert_exhausted(budget: Budget, counter: CounterRow) -> None:
    fire_alert(
        Alert.Kind.EXHAUSTED,
        _counter_key("exhausted", budget, counter.subject, counter.period_start),
        f"{_describe(budget, counter.subject)} is exhausted: calls are being refused",
        budget=budget,
        subject=counter.subject,
        severity=Alert.Severity.CRITICAL,
        details={"period_start": counter.period_start.isoformat()},
    )


# Close a held reservation, swap its hold for the actual spend on its counters (locked in id order before
# any is updated), price the call from the table in force and write the ledger row, in ONE statement (the
# PL/pgSQL function of migration 0007, which prices at the most specific of the names given, then the
# reservation's model, then ``*``). It returns null when the reservation was not held (settled,
# released or reclaimed before: the general path decides), else {"record": the ledger row's columns in
# _USAGE_COLUMNS order, "counters": each counter's new spend with its budget's limits, for the alert check}.
_SETTLE = """
SELECT budgets_settle(%(id)s, %(now)s, %(spent)s, %(uncached)s, %(cached_tokens)s, %(output)s, %(step)s, %(model)s,
                      %(provider)s, %(operation)s, %(input)s, %(source)s, %(price_names)s)::text
"""
_USAGE_COLUMNS = [
    "id",
    "agent",
    "run_id",
    "step",
    "session_id",
    "model",
    "provider",
    "operation",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "price_id",
    "cached",
    "reservation_id",
    "source",
    "rolled_up",
    "created_at",
]


def settle(reservation_id: int, usage: Mapping[str, Any], *, now: dt.datetime | None = None) -> UsageRecord:
    """Replace the reservation's estimate by the actual usage and write the priced ledger row, in one
    transaction. A reservation already reclaimed still records its spend (the call did happen); a repeated
    settle returns the first one's ledger row and counts nothing again."""
    try:
        # The one-statement path needs the model that answered; without it the general path prices the call
        # at the reservation's model.
        if usage.get("model") and not (usage.get("cache_hit") or usage.get("cached")):
            record = _settle_held(reservation_id, usage, now or timezone.now())
            if record is not None:
                return record
        with transaction.atomic():
            reservation = Reservation.objects.select_for_update().get(pk=reservation_id)
            if reservation.status == Reservation.Status.SETTLED:  # a repeated settle (a retry): spend counts once
                done = UsageRecord.objects.filter(reservation_id=reservation.pk).order_by("id").first()
                if done is not None:
                    return done
            record = _apply_usage(usage, reservation=reservation, now=now)
    except STORE_ERRORS as exc:
        raise _fail_closed(exc) from exc
    return record


# --- settling through a PostgreSQL outage ------------------------------------------------------------
PARKED_KEY = "agentops:budgets:parked-usage"


def settle_durably(reservation_id: int | None, usage: Mapping[str, Any], *, patience: float | None = None) -> None:
    """Settle an answered call (or record it when it held no reservation) even while PostgreSQL is away: try
    for `patience` seconds, then park it in Redis, where beat applies it (settle_parked). The ledger row keeps
    the time of the call. Only with Redis away too is it lost, and then the log line carries all of it."""
    at = timezone.now()
    patience = settings.BUDGET_SETTLE_PATIENCE_SECONDS if patience is None else patience
    deadline = time.monotonic() + patience
    while True:
        try:
            _settle_or_record(reservation_id, usage, at)
            return
        except BudgetUnavailable:
            if connection.in_atomic_block or time.monotonic() >= deadline:
                break
            discard_connection()
            time.sleep(0.5)
    _park(reservation_id, usage, at)


def _settle_or_record(reservation_id: int | None, usage: Mapping[str, Any], at: dt.datetime) -> None:
    if reservation_id is None:
        record_usage(usage, now=at)
    else:
        settle(reservation_id, usage, now=at)


def _park(reservation_id: int | None, usage: Mapping[str, Any], at: dt.datetime) -> None:
    from agentops.lib.redis import runtime_redis

    item = json.dumps({"reservation": reservation_id, "usage": dict(usage), "at": at.isoformat()}, default=str)
    try:
        runtime_redis().rpush(PARKED_KEY, item)
    except Exception:
        log.error("budget.usage_lost", reservation=reservation_id, usage=item, exc_info=True)
        return
    log.warning("budget.settle_parked", reservation=reservation_id)


def settle_parked(limit: int = 1000) -> int:
    """Beat: apply the parked settles, oldest first; one PostgreSQL still refuses goes back to wait."""
    from agentops.lib.redis import runtime_redis

    client = runtime_redis()
    applied = 0
    for _ in range(limit):
        raw = client.lpop(PARKED_KEY)
        if raw is None:
            break
        try:
            item = json.loads(raw)
            _settle_or_record(item["reservation"], item["usage"], dt.datetime.fromisoformat(item["at"]))
        except BudgetUnavailable:
            client.lpush(PARKED_KEY, raw)
            break
        except Exception:  # one bad item must not block the rest; the log line keeps all of it
            log.error("budget.parked_settle_failed", item=raw.decode(errors="replace")[:5000], exc_info=True)
            continue
        applied += 1
    if applied:
        log.info("budget.parked_settled", count=applied)
    return applied


def _settle_held(reservation_id: int, usage: Mapping[str, Any], now: dt.datetime) -> UsageRecord | None:
    """The common settle (a held reservation, a priced answer) in one statement; None if it was not held."""
    input_tokens = max(int(usage.get("input_tokens") or 0), 0)
    output_tokens = max(int(usage.get("output_tokens") or 0), 0)
    cached_tokens = max(int(usage.get("cached_tokens") or 0), 0)
    model = str(usage.get("model") or "unknown")[:120]
    cached = min(cached_tokens, input_tokens)  # priced as in cost_of: cached input at its own price
    operation = usage.get("operation")
    with connection.cursor() as cursor:
        cursor.execute(
            _SETTLE,
            {
                "id": reservation_id,
                "now": now,
                "spent": input_tokens + output_tokens,
                "uncached": input_tokens - cached,
                "cached_tokens": cached,
                "output": output_tokens,
                "step": _int_or_none(usage.get("step")),
                "model": model,
                "provider": str(usage.get("provider") or "")[:80],
                "operation": str(operation)[:100] if operation else None,
                "input": input_tokens,
                "source": str(usage.get("source") or "run")[:20],
                "price_names": usage_price_names(usage),  # the statement adds the reservation's model, then *
            },
        )
        outcome = cursor.fetchone()[0]
    if outcome is None:
        return None
    outcome = json.loads(outcome, parse_float=Decimal)
    values = dict(zip(_USAGE_COLUMNS, outcome["record"], strict=True))
    values["cost_usd"] = Decimal(values["cost_usd"])
    values["created_at"] = dt.datetime.fromisoformat(values["created_at"])
    record = UsageRecord.from_db(connection.alias, _USAGE_COLUMNS, list(values.values()))
    if input_tokens + output_tokens or record.cost_usd:
        metrics.LLM_COST.labels(model=model).inc(float(record.cost_usd))
        spent = [
            (c, int(st), Decimal(su), lt, Decimal(lu) if lu is not None else None, pct, period)
            for c, st, su, lt, lu, pct, period in outcome["counters"]
        ]
        transaction.on_commit(lambda: _after_settle(spent))
    return record


def _after_settle(counters: list[tuple]) -> None:
    """After a committed settle: announce it; read counters for the alert check only past a threshold (the
    settle statement returned each counter's new spend and its budget's limits)."""
    crossed = []
    for counter_id, tokens, usd, limit_tokens, limit_usd, soft_pct, period in counters:
        shares = [tokens / limit_tokens] if limit_tokens else []
        if limit_usd:
            shares.append(float(usd / limit_usd))
        if shares and (max(shares) * 100 >= soft_pct or (period == Budget.Period.DAY and max(shares) > 1)):
            crossed.append(counter_id)
    after_spend(crossed)


def record_usage(usage: Mapping[str, Any], *, now: dt.datetime | None = None) -> UsageRecord:
    """Record a call that held no reservation (a cache hit, a human's answer, usage reported after the
    fact): priced, added to the spend of every budget that applies."""
    try:
        with transaction.atomic():
            return _apply_usage(usage, reservation=None, now=now)
    except STORE_ERRORS as exc:
        raise _fail_closed(exc) from exc


def _apply_usage(
    usage: Mapping[str, Any], *, reservation: Reservation | None, now: dt.datetime | None = None
) -> UsageRecord:
    now = now or timezone.now()
    caller = (
        Caller.from_meta(usage)
        if reservation is None
        else Caller(agent=reservation.agent, session_id=reservation.session_id, run_id=reservation.run_id)
    )
    cached_hit = bool(usage.get("cache_hit") or usage.get("cached"))
    input_tokens = max(int(usage.get("input_tokens") or 0), 0)
    output_tokens = max(int(usage.get("output_tokens") or 0), 0)
    cached_tokens = max(int(usage.get("cached_tokens") or 0), 0)
    model = str(usage.get("model") or (reservation.model if reservation else "") or "unknown")[:120]
    names = [*usage_price_names(usage), *([reservation.model] if reservation and reservation.model else [])]
    price = None if cached_hit else price_in_force(names, now)
    # A cache hit answers from a stored answer: it costs nothing and uses no budget.
    cost = Decimal(0) if cached_hit else cost_of(price, input_tokens, output_tokens, cached_tokens)
    spent_tokens = 0 if cached_hit else input_tokens + output_tokens
    held = reservation is not None and reservation.status == Reservation.Status.HELD

    if reservation is not None:
        ids = list(reservation.counter_ids)
    else:
        keys = [
            (b, s, period_start(b, now))
            for b, s in applicable_budgets(caller)
            if b.limit_tokens is not None or b.limit_usd is not None
        ]
        ids = []
        if keys and spent_tokens:
            with connection.cursor() as cursor:
                ids = [c.id for c in _lock_counters(cursor, keys)]
    if ids:
        with connection.cursor() as cursor:
            if reservation is not None:  # the no-reservation path locked them above
                _lock_counters_by_id(cursor, ids)
            cursor.execute(
                _APPLY_TO_COUNTERS,
                {
                    "spent_tokens": spent_tokens,
                    "spent_usd": cost,
                    "held_tokens": reservation.tokens if held else 0,
                    "held_usd": reservation.usd if held else Decimal(0),
                    "held_count": 1 if held else 0,
                    "ids": ids,
                },
            )
    record = UsageRecord.objects.create(
        agent=caller.agent[:80],
        run_id=caller.run_id,
        step=_int_or_none(usage.get("step")),
        session_id=caller.session_id[:200],
        model=model,
        provider=str(usage.get("provider") or "")[:80],
        operation=str(usage.get("operation") or (reservation.operation if reservation else "") or "call")[:100],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cost_usd=cost,
        price=price,
        cached=cached_hit,
        reservation_id=reservation.pk if reservation else None,
        source=str(usage.get("source") or "run")[:20],
        created_at=now,
    )
    if reservation is not None:  # also one reclaimed or released before: its spend is now recorded, once
        reservation.status = Reservation.Status.SETTLED
        reservation.closed_at = now
        reservation.save(update_fields=["status", "closed_at"])
    if spent_tokens or cost:
        metrics.LLM_COST.labels(model=model).inc(float(cost))
        ids_after = ids
        transaction.on_commit(lambda: after_spend(ids_after))
    return record


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def step_cost(run_id: int, step: int) -> Decimal:
    """What the calls of one run step cost (the ledger rows it wrote)."""
    from django.db.models import Sum

    total = UsageRecord.objects.filter(run_id=run_id, step=step).aggregate(cost=Sum("cost_usd"))["cost"]
    return total or Decimal(0)


def release(reservation_id: int) -> bool:
    """Give a held reservation back in full (the call failed or never happened). False if it was not held."""
    try:
        with transaction.atomic():
            reservation = Reservation.objects.select_for_update().filter(pk=reservation_id).first()
            if reservation is None or reservation.status != Reservation.Status.HELD:
                return False
            _give_back(reservation, Reservation.Status.RELEASED)
            return True
    except STORE_ERRORS as exc:
        raise _fail_closed(exc) from exc


def _give_back(reservation: Reservation, status: str) -> None:
    with connection.cursor() as cursor:
        _lock_counters_by_id(cursor, reservation.counter_ids)
        cursor.execute(
            _APPLY_TO_COUNTERS,
            {
                "spent_tokens": 0,
                "spent_usd": Decimal(0),
                "held_tokens": reservation.tokens,
                "held_usd": reservation.usd,
                "held_count": 1,
                "ids": list(reservation.counter_ids),
            },
        )
    reservation.status = status
    reservation.closed_at = timezone.now()
    reservation.save(update_fields=["status", "closed_at"])


def reclaim_expired(limit: int = 500) -> int:
    """Beat: give back reservations whose lease ran out (the caller died before settling)."""
    reclaimed = 0
    with transaction.atomic():
        expired = list(
            Reservation.objects.select_for_update(skip_locked=True)
            .filter(status=Reservation.Status.HELD, expires_at__lt=timezone.now())
            .order_by("id")[:limit]
        )
        if expired:  # every counter first, in id order as reserve locks them: no lock-order deadlock with it
            with connection.cursor() as cursor:
                _lock_counters_by_id(cursor, sorted({i for r in expired for i in r.counter_ids}))
        for reservation in expired:
            _give_back(reservation, Reservation.Status.EXPIRED)
            reclaimed += 1
    if reclaimed:
        log.warning("budget.reservations_reclaimed", count=reclaimed)
        _publish_budgets()
    return reclaimed


# --- live "budgets changed" signal -----------------------------------------------------------------

_LAST_PUBLISH = [0.0]
PUBLISH_EVERY = 1.0  # seconds: a page re-reads at most this often, however busy the traffic


def _publish_budgets() -> None:
    """Tell open budget and cost pages that numbers moved (throttled per process; pages re-read)."""
    from agentops.lib import live

    now = time.monotonic()
    if now - _LAST_PUBLISH[0] < PUBLISH_EVERY:
        return
    _LAST_PUBLISH[0] = now
    live.send_now("budgets", "budgets.changed", {})


# --- alerts ------------------------------------------------------------------------------------------


def fire_alert(
    kind: str,
    dedup_key: str,
    message: str,
    *,
    budget: Budget | None = None,
    subject: str = "",
    severity: str = Alert.Severity.WARNING,
    details: Mapping[str, Any] | None = None,
) -> Alert | None:
    """Create the alert for one crossing, once: while an alert with this key exists, another call does
    nothing and returns None. A new alert is announced live and handed to every enabled webhook after
    commit. The committed row is the only memory of a crossing (no per-process cache): an alert whose
    transaction rolled back fires again on the next call, and a deleted one (a flushed test database) never
    silences its key."""
    key = dedup_key[:300]
    # The common call after a crossing (every later settle, every refusal): one indexed read, no INSERT.
    if Alert.objects.filter(dedup_key=key).exists():
        return None
    with transaction.atomic():
        alert, created = _insert_alert_once(
            kind=kind,
            dedup_key=key,
            message=message[:500],
            budget=budget,
            subject=subject[:200],
            severity=severity,
            details=dict(details or {}),
            created_at=timezone.now(),
        )
        if not created:
            return None
        log.warning("budget.alert", kind=kind, alert_id=alert.pk, message=message)
        transaction.on_commit(lambda: metrics.ALERTS_FIRED.labels(kind=kind).inc(), robust=True)
        _after_commit_announce(alert, Webhook.objects.filter(enabled=True))
    return alert


def _insert_alert_once(**fields: Any) -> tuple[Alert, bool]:
    try:
        with transaction.atomic():
            return Alert.objects.create(**fields), True
    except IntegrityError:
        return Alert.objects.get(dedup_key=fields["dedup_key"]), False


SEVERITY_RANK = {Alert.Severity.INFO: 0, Alert.Severity.WARNING: 1, Alert.Severity.CRITICAL: 2}


def _after_commit_announce(alert: Alert, webhooks: Iterable[Webhook]) -> None:
    from agentops.lib import live
    from budgets import tasks

    now = timezone.now()
    deliveries = [
        WebhookDelivery.objects.create(webhook=hook, alert=alert, created_at=now, updated_at=now)
        for hook in webhooks
        if SEVERITY_RANK[hook.min_severity] <= SEVERITY_RANK[alert.severity] or alert.kind == Alert.Kind.TEST
    ]
    live.publish("alerts", "alert.fired", {"alert": alert.pk, "kind": alert.kind, "message": alert.message})
    for delivery in deliveries:
        transaction.on_commit(lambda pk=delivery.pk: tasks.deliver_webhook.delay(pk), robust=True)


def acknowledge_alert(alert_id: int, user) -> bool:
    """Mark an alert seen. False if it was already acknowledged (or does not exist)."""
    from agentops.lib import live

    with transaction.atomic():
        updated = Alert.objects.filter(pk=alert_id, acknowledged_at=None).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
        if updated:
            live.publish("alerts", "alert.acknowledged", {"alert": alert_id})
    return bool(updated)


def acknowledge_all(user) -> int:
    from agentops.lib import live

    with transaction.atomic():
        updated = Alert.objects.filter(acknowledged_at=None).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
        if updated:
            live.publish("alerts", "alert.acknowledged", {"count": updated})
    return updated


def after_spend(counter_ids: list[int]) -> None:
    """After a committed spend: announce it, raise the threshold alerts it crossed. Never raises: the
    spend is already committed, and a caller that saw an error here could settle again and count the usage
    twice; an alert missed here is raised by the next beat evaluation."""
    try:
        _publish_budgets()
        if counter_ids:
            evaluate_counter_alerts(BudgetCounter.objects.filter(pk__in=counter_ids).select_related("budget"))
    except Exception as exc:
        log.error("budget.alert_evaluation_failed", error=repr(exc)[:300])


# Dedup keys seen committed in the database, remembered briefly: while a budget stays over its threshold
# every settle lands in evaluate_counter_alerts, and a busy process would read the same alert rows each
# time. Only keys read back from committed rows are remembered, so a rolled-back alert is never silenced;
# a deleted one is forgotten after RAISED_TTL.
RAISED_TTL = 10.0
_RAISED: dict[str, float] = {}


def evaluate_counter_alerts(counters: Iterable[BudgetCounter]) -> int:
    """Soft threshold crossed and (day budgets) daily total over its limit, once per crossing: per budget,
    subject, period and limits (raising a limit or changing the soft threshold re-arms)."""
    candidates: list[tuple[str, str, str, dict[str, Any]]] = []
    for counter in counters:
        budget = counter.budget
        used = utilization(budget, counter.spent_tokens, counter.spent_usd)
        if used is None:
            continue
        metrics.BUDGET_UTILIZATION.labels(budget=budget.name).set(used)
        where = _describe(budget, counter.subject)
        details = {"utilization": round(used, 4), "period_start": counter.period_start.isoformat()}
        if used * 100 >= budget.soft_threshold_pct:
            candidates.append(
                (
                    Alert.Kind.SOFT_THRESHOLD,
                    _counter_key(f"soft@{budget.soft_threshold_pct}", budget, counter.subject, counter.period_start),
                    f"{where} passed {budget.soft_threshold_pct}% ({used:.0%} used)",
                    {"budget": budget, "subject": counter.subject, "details": details},
                )
            )
        if budget.period == Budget.Period.DAY and used > 1:
            candidates.append(
                (
                    Alert.Kind.DAILY_OVER,
                    _counter_key("daily_over", budget, counter.subject, counter.period_start),
                    f"{where}: today's total is over its limit ({used:.0%})",
                    {
                        "budget": budget,
                        "subject": counter.subject,
                        "severity": Alert.Severity.CRITICAL,
                        "details": details,
                    },
                )
            )
    if not candidates:
        return 0
    # After a crossing every later settle lands here again: one read for the whole batch finds the alerts
    # already raised, so only a new crossing costs an INSERT.
    keys = [key[:300] for _, key, _, _ in candidates]
    now = time.monotonic()
    if all(_RAISED.get(key, 0.0) > now for key in keys):
        return 0
    known = set(Alert.objects.filter(dedup_key__in=keys).values_list("dedup_key", flat=True))
    for key in known:
        _RAISED[key] = now + RAISED_TTL
    return sum(
        bool(fire_alert(kind, key, message, **fields))
        for kind, key, message, fields in candidates
        if key[:300] not in known
    )


def utilization(budget: Budget, tokens: int, usd: Decimal) -> float | None:
    """The larger of tokens / token limit and dollars / dollar limit (None without limits)."""
    shares = []
    if budget.limit_tokens:
        shares.append(tokens / budget.limit_tokens)
    if budget.limit_usd:
        shares.append(float(usd / budget.limit_usd))
    return max(shares) if shares else None


def evaluate_alerts() -> int:
    """Beat: every current counter against its thresholds, session spikes, the recent error rate."""
    from django.db.models import Count, Q, Sum

    from agentops.runs.models import Step

    now = timezone.now()
    fired = 0
    current = []
    for budget in Budget.objects.filter(enabled=True):
        for counter in budget.counters.filter(period_start=period_start(budget, now)):
            counter.budget = budget
            current.append(counter)
    fired += evaluate_counter_alerts(current)

    config = AlertSettings.current()
    hour_ago = now - dt.timedelta(hours=1)
    # A session is one agent's (as for session budgets): two agents that pick the same id are two sessions.
    spikes = (
        UsageRecord.objects.filter(created_at__gte=hour_ago)
        .exclude(session_id="")
        .values("agent", "session_id")
        .annotate(cost=Sum("cost_usd"))
        .filter(cost__gt=config.session_spike_usd)
    )
    for row in spikes:
        agent, session = row["agent"], row["session_id"]
        who = f"session {session}" + (f" of agent {agent}" if agent else "")
        fired += bool(
            fire_alert(
                Alert.Kind.SESSION_SPIKE,
                f"session_spike:{session_subject(agent, session)}:{now.date().isoformat()}",
                f"{who} spent ${row['cost']:.4f} in the last hour (threshold ${config.session_spike_usd})",
                subject=session,
                details={
                    "agent": agent,
                    "cost_usd": str(row["cost"]),
                    "threshold_usd": str(config.session_spike_usd),
                },
            )
        )

    window = now - dt.timedelta(minutes=5)
    calls = Step.objects.filter(kind="llm", finished_at__gte=window).aggregate(
        total=Count("id", filter=Q(status__in=("completed", "failed"))), failed=Count("id", filter=Q(status="failed"))
    )
    total, failed = calls["total"] or 0, calls["failed"] or 0
    rate = failed / total if total else 0.0
    # Whole numbers: in floats 11 of 20 calls is more than 55 % (0.55 * 100 == 55.00000000000001).
    over = total >= config.error_rate_min_calls and failed * 100 > config.error_rate_pct * total
    fired += _error_rate_alert(over, rate, failed, total, config, now)
    return fired


ERROR_RATE_STATE_KEY = "agentops:alerts:error_rate:since"


def _error_rate_alert(over: bool, rate: float, failed: int, total: int, config: AlertSettings, now) -> int:
    """One alert per episode: the episode starts when the rate goes over and ends when it comes back."""
    from agentops.lib.redis import runtime_redis

    redis = runtime_redis()
    try:
        episode = redis.get(ERROR_RATE_STATE_KEY)
        if not over:
            if episode is not None:
                redis.delete(ERROR_RATE_STATE_KEY)
            return 0
        if episode is None:
            # NX: two evaluations running at once agree on one episode (and so on one alert).
            redis.set(ERROR_RATE_STATE_KEY, now.isoformat(), nx=True)
            episode = redis.get(ERROR_RATE_STATE_KEY) or now.isoformat().encode()
    except Exception as exc:  # Redis down: dedup by the 5-minute window instead
        log.warning("budget.error_rate_state_unavailable", error=repr(exc))
        episode = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0).isoformat().encode()
    return bool(
        fire_alert(
            Alert.Kind.ERROR_RATE,
            f"error_rate:{episode.decode()}",
            f"{rate:.0%} of LLM calls failed over the last 5 minutes ({failed} of {total}; threshold "
            f"{config.error_rate_pct}%)",
            severity=Alert.Severity.CRITICAL,
            details={"failed": failed, "total": total, "rate": round(rate, 4)},
        )
    )


# --- webhooks ----------------------------------------------------------------------------------------


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible incoming-webhook JSON (``text`` is what Slack shows; the rest is for machines)."""
    icon = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}[alert.severity]
    return {
        "text": f"{icon} agentops {alert.get_kind_display()}: {alert.message}",
        "agentops": {
            "alert_id": alert.pk,
            "kind": alert.kind,
            "severity": alert.severity,
            "budget": alert.budget.name if alert.budget_id else None,
            "subject": alert.subject,
            "details": alert.details,
            "created_at": alert.created_at.isoformat(),
        },
    }


def record_delivery_attempt(delivery_id: int, *, status_code: int | None, error: str, final: bool) -> str:
    """Log one attempt; returns the delivery's new status (delivered on a 2xx)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error[:500]
        delivery.log = [*delivery.log, {"at": now.isoformat(), "status_code": status_code, "error": error[:300]}]
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = now
        else:
            delivery.status = WebhookDelivery.Status.FAILED if final else WebhookDelivery.Status.RETRYING
        delivery.updated_at = now
        delivery.save(
            update_fields=["attempts", "last_status_code", "last_error", "log", "status", "delivered_at", "updated_at"]
        )
        from agentops.lib import live

        live.publish("alerts", "webhook.delivery", {"delivery": delivery.pk, "status": delivery.status})
        return delivery.status


STALLED_PENDING = dt.timedelta(minutes=2)
STALLED_RETRYING = dt.timedelta(minutes=15)


def requeue_stalled_deliveries() -> int:
    """Beat: hand deliveries whose task was lost (Redis restarted, enqueue failed after commit) back to
    Celery. Webhooks are at-least-once: a delivery that was only slow may be POSTed twice."""
    from budgets import tasks

    now = timezone.now()
    stalled = list(
        WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.PENDING, updated_at__lt=now - STALLED_PENDING)
            | Q(status=WebhookDelivery.Status.RETRYING, updated_at__lt=now - STALLED_RETRYING)
        ).values_list("pk", flat=True)[:200]
    )
    for pk in stalled:
        WebhookDelivery.objects.filter(pk=pk).update(updated_at=now)
        tasks.deliver_webhook.delay(pk)
    if stalled:
        log.warning("budget.webhook_deliveries_requeued", count=len(stalled))
    return len(stalled)


def send_test_alert(webhook: Webhook, user) -> Alert:
    """A test alert delivered to this one webhook (the settings screen's "send test" button)."""
    now = timezone.now()
    with transaction.atomic():
        alert = Alert.objects.create(
            kind=Alert.Kind.TEST,
            severity=Alert.Severity.INFO,
            message=f"Test alert for webhook {webhook.name!r}, sent by {user}",
            dedup_key=f"test:{webhook.pk}:{now.isoformat()}",
            created_at=now,
            acknowledged_at=now,
            acknowledged_by=user if getattr(user, "pk", None) else None,
        )
        _after_commit_announce(alert, [webhook])
    return alert


def _save_validated(row):
    """Validate (ValidationError, nothing saved) and save a settings row."""
    with transaction.atomic():
        row.full_clean()
        row.save()
        if isinstance(row, Budget | ModelPrice):
            transaction.on_commit(directory_changed)
    return row


def save_webhook(webhook: Webhook) -> Webhook:
    return _save_validated(webhook)


def delete_webhook(webhook_id: int) -> None:
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook_id).delete()


def save_alert_settings(config: AlertSettings) -> AlertSettings:
    return _save_validated(config)


# --- budgets and prices (the admin screens and the API call these) -----------------------------------


def save_budget(budget: Budget) -> Budget:
    """Create or change a budget (validated). Takes effect on the next reservation in every process."""
    from agentops.lib import live

    with transaction.atomic():
        _save_validated(budget)
        live.publish("budgets", "budget.saved", {"budget": budget.pk})
    return budget


def delete_budget(budget_id: int) -> bool:
    """Delete a budget. Reservations still held against it are simply no longer counted."""
    from agentops.lib import live

    with transaction.atomic():
        deleted, _ = Budget.objects.filter(pk=budget_id).delete()
        transaction.on_commit(directory_changed)
        if deleted:
            live.publish("budgets", "budget.deleted", {"budget": budget_id})
    return bool(deleted)


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
    return _save_validated(row)


def delete_price(price_id: int) -> bool:
    """Delete a price row that no call was charged at (a mistyped future price, say)."""
    with transaction.atomic():
        row = ModelPrice.objects.filter(pk=price_id).first()
        if row is None or UsageRecord.objects.filter(price=row).exists():
            return False
        row.delete()
        transaction.on_commit(directory_changed)
        return True


# --- rollups -----------------------------------------------------------------------------------------

_ROLL_UP = """
WITH moved AS (
    UPDATE budgets_usagerecord u SET rolled_up = true
    WHERE u.id IN (
        SELECT id FROM budgets_usagerecord WHERE NOT rolled_up ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
    )
    RETURNING u.created_at, u.agent, u.model, u.operation, u.session_id, u.cached,
              u.input_tokens, u.output_tokens, u.cached_tokens, u.cost_usd
),
hourly AS (
    INSERT INTO budgets_hourlyusage
        (hour, agent, model, operation, calls, cache_hits, input_tokens, output_tokens, cached_tokens, cost_usd)
    SELECT date_trunc('hour', created_at), agent, model, operation, count(*), count(*) FILTER (WHERE cached),
           sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
    FROM moved GROUP BY 1, 2, 3, 4
    ON CONFLICT (hour, agent, model, operation) DO UPDATE SET
        calls = budgets_hourlyusage.calls + EXCLUDED.calls,
        cache_hits = budgets_hourlyusage.cache_hits + EXCLUDED.cache_hits,
        input_tokens = budgets_hourlyusage.input_tokens + EXCLUDED.input_tokens,
        output_tokens = budgets_hourlyusage.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = budgets_hourlyusage.cached_tokens + EXCLUDED.cached_tokens,
        cost_usd = budgets_hourlyusage.cost_usd + EXCLUDED.cost_usd
),
daily AS (
    INSERT INTO budgets_dailyusage
        (day, agent, model, operation, calls, cache_hits, input_tokens, output_tokens, cached_tokens, cost_usd)
    SELECT (created_at AT TIME ZONE 'UTC')::date, agent, model, operation, count(*), count(*) FILTER (WHERE cached),
           sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
    FROM moved GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, agent, model, operation) DO UPDATE SET
        calls = budgets_dailyusage.calls + EXCLUDED.calls,
        cache_hits = budgets_dailyusage.cache_hits + EXCLUDED.cache_hits,
        input_tokens = budgets_dailyusage.input_tokens + EXCLUDED.input_tokens,
        output_tokens = budgets_dailyusage.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = budgets_dailyusage.cached_tokens + EXCLUDED.cached_tokens,
        cost_usd = budgets_dailyusage.cost_usd + EXCLUDED.cost_usd
),
sessions AS (
    INSERT INTO budgets_sessionusage (day, session_id, agent, calls, tokens, cost_usd)
    SELECT (created_at AT TIME ZONE 'UTC')::date, session_id, agent, count(*),
           sum(input_tokens + output_tokens), sum(cost_usd)
    FROM moved WHERE session_id <> '' GROUP BY 1, 2, 3
    ON CONFLICT (day, session_id, agent) DO UPDATE SET
        calls = budgets_sessionusage.calls + EXCLUDED.calls,
        tokens = budgets_sessionusage.tokens + EXCLUDED.tokens,
        cost_usd = budgets_sessionusage.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) FROM moved
"""


def roll_up_usage(batch: int = 50_000, max_batches: int = 40) -> int:
    """Beat: fold new ledger rows into the hourly, daily and per-session rollups, exactly once each (rows
    are marked in the same statement; concurrent rollers skip each other's rows)."""
    total = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ROLL_UP, {"batch": batch})
            moved = cursor.fetchone()[0]
        total += moved
        if moved < batch:
            break
    return total


def store_is_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False
