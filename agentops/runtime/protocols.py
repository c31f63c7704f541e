"""The small protocols through which the pure-Python runtime talks to the Django side, and test doubles.

* ``BudgetGate`` — reserve estimated spend before a call, settle actual usage after, release on failure
  (the budgets app implements it atomically across every budget that applies);
* ``Escalator`` — hand a request to a human when every automatic handler failed (the review app turns it
  into an escalation whose "take over" answer is the result, or suspends the run);
* ``Journal`` — recorded results of completed steps, replayed when a durable run re-executes;
* ``UsageSink`` — the usage record of a guarded call that held no reservation (the budgets app prices and
  stores it; a settled reservation records its own).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BudgetExceeded(Exception):
    """A reservation was refused. ``cheaper_model`` names a model the policy allows instead, if any;
    ``escalate`` says whether the refusing budget hands the call to a human (None: the runtime setting)."""

    def __init__(
        self, budget: str, message: str, *, cheaper_model: str | None = None, escalate: bool | None = None
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.message = message
        self.cheaper_model = cheaper_model
        self.escalate = escalate


class BudgetUnavailable(Exception):
    """The budget store could not be reached: the call is refused (fail closed), never admitted unchecked."""


class HumanPending(Exception):
    """The request went to a human who has not answered yet: suspend (do not hold a worker) and resume later."""

    def __init__(self, escalation_id: Any = None, reason: str = "all_fallbacks_failed") -> None:
        super().__init__(f"waiting for a human (escalation {escalation_id}, reason {reason})")
        self.escalation_id = escalation_id
        self.reason = reason
        self.hops: list = []  # filled in by the guard: what was tried before the handoff


class HumanRejected(Exception):
    """A human decided the request must not be answered (the escalation was rejected)."""

    def __init__(self, escalation_id: Any = None, message: str = "rejected by a reviewer") -> None:
        super().__init__(message)
        self.escalation_id = escalation_id


@dataclass(frozen=True)
class HandoffOutcome:
    """A human's answer to a handed-off request."""

    text: str
    reviewer: str | None = None
    escalation_id: Any = None


@runtime_checkable
class BudgetGate(Protocol):
    def reserve(self, meta: Mapping[str, Any]) -> Any:
        """Reserve ``meta["estimated_tokens"]`` (and dollars for ``meta["model"]``); return a handle.

        Raises ``BudgetExceeded`` when a hard limit would be passed."""

    def settle(self, handle: Any, usage: Mapping[str, Any]) -> Any:
        """Replace the reservation by the actual ``usage`` (input/output tokens, model) and record it:
        a settled reservation is the call's usage record (the ``UsageSink`` does not see it again). May
        return the record; its ``cost_usd`` (attribute or key), when there is one, goes on the call's span."""

    def release(self, handle: Any) -> None:
        """Give the whole reservation back (the call failed or was suspended)."""


@runtime_checkable
class Escalator(Protocol):
    def handoff(self, request: Any, hops: Sequence[Any], reason: str) -> HandoffOutcome:
        """Return a human's answer, or raise ``HumanPending`` (suspended) / ``HumanRejected``."""


@runtime_checkable
class Journal(Protocol):
    def lookup(self, key: str) -> Mapping[str, Any] | None:
        """The recorded result of step ``key``, or None if it never completed."""

    def record(self, key: str, value: Mapping[str, Any]) -> None:
        """Record the result of step ``key`` (once)."""


@runtime_checkable
class UsageSink(Protocol):
    def record(self, usage: Mapping[str, Any]) -> None:
        """Store the usage record of a call that held no reservation (a cache hit, a human's answer, or no
        budget applied): tokens, model, operation, handler, cache hit, metadata."""


class CallCounter(Protocol):
    def count(self, outcome: str) -> None:
        """One guarded call ended with ``outcome`` (success, fallback, cache_hit, human, failed, error,
        disconnected, budget_exceeded, pending, rejected): the error-rate alert's shared count. Must not block."""


class AllowAllBudgetGate:
    """Admits everything (no budgets configured yet)."""

    def reserve(self, meta: Mapping[str, Any]) -> Any:
        return None

    def settle(self, handle: Any, usage: Mapping[str, Any]) -> None:
        return None

    def release(self, handle: Any) -> None:
        return None


ALLOW_ALL = AllowAllBudgetGate()


# --- test doubles --------------------------------------------------------------------------------


@dataclass
class RecordingBudgetGate:
    """Records reserve/settle/release; refuses when ``limit_tokens`` would be passed (simple counter)."""

    limit_tokens: int | None = None
    cheaper_model: str | None = None
    reserved: list[Mapping[str, Any]] = field(default_factory=list)
    settled: list[tuple[Any, Mapping[str, Any]]] = field(default_factory=list)
    released: list[Any] = field(default_factory=list)
    spent_tokens: int = 0
    _ids: Any = field(default_factory=itertools.count)
    _open: dict[int, int] = field(default_factory=dict)

    def reserve(self, meta: Mapping[str, Any]) -> int:
        tokens = int(meta.get("estimated_tokens", 0))
        if self.limit_tokens is not None:
            in_flight = sum(self._open.values())
            if self.spent_tokens + in_flight + tokens > self.limit_tokens:
                cheaper = self.cheaper_model if meta.get("model") != self.cheaper_model else None
                raise BudgetExceeded("test", f"{tokens} tokens would pass {self.limit_tokens}", cheaper_model=cheaper)
        handle = next(self._ids)
        self._open[handle] = tokens
        self.reserved.append(dict(meta))
        return handle

    def settle(self, handle: int, usage: Mapping[str, Any]) -> None:
        self._open.pop(handle, None)
        self.spent_tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        self.settled.append((handle, dict(usage)))

    def release(self, handle: int) -> None:
        self._open.pop(handle, None)
        self.released.append(handle)

    @property
    def open_reservations(self) -> int:
        return len(self._open)


@dataclass
class ScriptedEscalator:
    """Answers with ``answer``; or raises ``HumanPending`` when ``pending`` (or ``HumanRejected``)."""

    answer: str = "answer written by a reviewer"
    pending: bool = False
    reject: bool = False
    calls: list[tuple[Any, list, str]] = field(default_factory=list)

    def handoff(self, request: Any, hops: Sequence[Any], reason: str) -> HandoffOutcome:
        self.calls.append((request, list(hops), reason))
        if self.pending:
            raise HumanPending(escalation_id=len(self.calls), reason=reason)
        if self.reject:
            raise HumanRejected(escalation_id=len(self.calls))
        return HandoffOutcome(self.answer, reviewer="test-reviewer", escalation_id=len(self.calls))


class MemoryJournal:
    """A dict-backed journal."""

    def __init__(self) -> None:
        self.entries: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Mapping[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, value: Mapping[str, Any]) -> None:
        with self._lock:
            self.entries.setdefault(key, value)


class RecordingUsageSink:
    """Keeps every usage record in ``records``."""

    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def record(self, usage: Mapping[str, Any]) -> None:
        self.records.append(dict(usage))
