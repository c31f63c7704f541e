"""Which budgets apply to a caller: the budget directory (every enabled budget, the agent's team and the
prices in force, read in one statement and cached per process), and the counter subjects budgets are
keyed by."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from agentops.lib.redis import runtime_redis
from agentops.runtime.model_names import price_names
from budgets.models import ANY_MODEL, Budget, ModelPrice

log = structlog.get_logger(__name__)


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
        return cls(agent=agent, team=team, session_id=session, run_id=int_or_none(run))


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
# for at most DIRECTORY_TTL seconds (a price scheduled to start applies to estimates within that; the ledger
# is priced in the settle statement itself). Two ways to know a copy is current:
# - the hold statement (reservations.py) checks the PostgreSQL version the copy was read at (triggers bump
#   it in the transaction of any budget, price or team change, migration 0010) and asks for a re-read when
#   it moved: the common path costs no extra round trip;
# - everything else (prices.py, a reservation that holds nothing) asks Redis for the budgets version (bumped
#   after every such change commits): one GET instead of a PostgreSQL query; without Redis it reads
#   PostgreSQL every time.
DIRECTORY_VERSION_KEY = "agentops:budgets:version"
DIRECTORY_TTL = 1.0
Directory = tuple[list[Budget], str, dict[str, ModelPrice | None]]
# (agent, models) -> (expires at, Redis version or None when not asked, PostgreSQL version, directory)
_directory_cache: dict[tuple[str, tuple[str, ...]], tuple[float, bytes | None, int | None, Any]] = {}


def directory_changed() -> None:
    """Call after a change to budgets, prices or agent teams commits: every process re-reads."""
    _directory_cache.clear()
    try:
        runtime_redis().incr(DIRECTORY_VERSION_KEY)
    except Exception as exc:  # the TTL bounds how long other processes keep their copy
        log.warning("budgets.directory_version_unavailable", error=repr(exc)[:200])


def cached_directory(agent: str, models: Iterable[str]) -> Directory:
    """``read_directory`` now, reusing this process's last read while Redis says it is current (see above)."""
    return current_directory(agent, models)[0]


def current_directory(agent: str, models: Iterable[str]) -> tuple[Directory, int | None]:
    """(``read_directory`` now, its PostgreSQL version), checked against the Redis version."""
    wanted = tuple(dict.fromkeys(models))
    try:
        version = runtime_redis().get(DIRECTORY_VERSION_KEY) or b"0"
    except Exception:
        return _read(agent, wanted)
    key = (agent, wanted)
    now = time.monotonic()
    hit = _directory_cache.get(key)
    if hit is not None and hit[0] > now and hit[1] == version:
        return hit[3], hit[2]
    found, pg_version = _read(agent, wanted)
    _remember(key, version, pg_version, found, now)
    return found, pg_version


def directory_to_hold(agent: str, models: Iterable[str], *, reread: bool = False) -> tuple[Directory, int | None]:
    """(the directory, the PostgreSQL version it was read at) for a hold statement, which checks that version
    itself: this process's copy while its TTL lasts, no Redis round trip; read again when ``reread``."""
    wanted = tuple(dict.fromkeys(models))
    key = (agent, wanted)
    now = time.monotonic()
    hit = _directory_cache.get(key)
    if not reread and hit is not None and hit[0] > now and hit[2] is not None:
        return hit[3], hit[2]
    found, pg_version = _read(agent, wanted)
    _remember(key, None, pg_version, found, now)
    return found, pg_version


def _remember(key: tuple[str, tuple[str, ...]], version: bytes | None, pg_version: int | None, found, now) -> None:
    if len(_directory_cache) > 10_000:  # many agents × model sets: start over rather than grow
        _directory_cache.clear()
    _directory_cache[key] = (now + DIRECTORY_TTL, version, pg_version, found)


def read_directory(agent: str, models: Iterable[str] = (), at: dt.datetime | None = None) -> Directory:
    """(enabled budgets in id order, the agent's team, the price in force at ``at`` for each model)."""
    return _read(agent, models, at)[0]


def _read(agent: str, models: Iterable[str] = (), at: dt.datetime | None = None) -> tuple[Directory, int | None]:
    wanted = list(dict.fromkeys(models))
    candidates = {model: price_names(model) for model in wanted}
    names = list(dict.fromkeys(name for names in candidates.values() for name in names))
    with connection.cursor() as cursor:
        cursor.execute(_DIRECTORY, {"agent": agent, "models": [*names, ANY_MODEL], "at": at or timezone.now()})
        budgets_json, team, prices_json, version = cursor.fetchone()[0]
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
    directory = (budgets, team or "", {m: _most_specific(found, candidates[m]) for m in wanted})
    return directory, int(version) if version is not None else None


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
    budgets, team, _ = read_directory(caller.agent)
    return applicable_among(budgets, team, caller)


def applicable_among(budgets: list[Budget], team: str, caller: Caller) -> list[tuple[Budget, str]]:
    """(budget, counter subject) for each of ``budgets`` that applies to the caller (of ``team`` unless the
    caller names its own)."""
    if not caller.team and team:
        caller = dataclasses.replace(caller, team=team)
    return [(budget, subject) for budget in budgets if (subject := subject_for(budget, caller)) is not None]


def describe(budget: Budget, subject: str) -> str:
    """A budget and counter subject as refusals and alerts name them: 'budget "daily" for agent a (day)'."""
    if subject_parts(budget, subject)[0]:
        where = f" for {subject_label(budget, subject)}"
    else:
        where = f" for {budget.scope} {subject}" if subject else ""
    return f'budget "{budget.name}"{where} ({budget.period})'


def int_or_none(value: Any) -> int | None:
    """An id or step number from a caller's metadata, None when absent or not a number."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def save_to_directory(row: Budget | ModelPrice):
    """Validate (ValidationError, nothing saved) and save a budget or price row; every process re-reads the
    directory once it commits."""
    with transaction.atomic():
        row.full_clean()
        row.save()
        transaction.on_commit(directory_changed)
    return row
