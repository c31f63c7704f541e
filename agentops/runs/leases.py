"""One thread per worker process keeps the leases of the runs it executes: it renews each lease every lease/3
seconds, notices cancellation and a lost lease, marks the session active, and marks begun a step that is still
in flight after MARK_AFTER seconds (execution.DbJournal records fast steps once, when they end).

Why one thread for the process instead of one per run: starting and joining a heartbeat thread for every run
was a measurable share of a short run's CPU on a worker (and a short run never needs a single beat).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from agentops.lib import activity
from agentops.lib.db import discard_connection
from agentops.runs.actions import lifecycle

log = structlog.get_logger("agentops.runs")

# A step in flight this long is marked begun (visible as running on the timeline, counted if its worker dies).
MARK_AFTER = 0.5
TICK = 0.25  # how often the keeper looks for such steps while it holds a lease


@dataclass(eq=False)
class Lease:
    """One execution's lease: what the keeper renews, and what it found (cancel requested, lease lost)."""

    run_pk: int
    worker: str
    seconds: float
    seen: tuple[str, str] | None = None  # (agent, session) marked active on every renewal
    mark_in_flight: Callable[[float], None] | None = None  # the journal's deferred begin mark
    cancel_requested: bool = False
    lost: bool = False
    renew_at: float = field(default=0.0)


class LeaseKeeper:
    """The process's keeper thread and the leases it holds (started on first use, again after a fork)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._leases: set[Lease] = set()
        self._pid: int | None = None

    def keep(self, lease: Lease) -> None:
        """Renew ``lease`` from now on, until ``release``."""
        lease.renew_at = time.monotonic() + lease.seconds / 3
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (a prefork child has no parent thread)
                self._pid = os.getpid()
                self._leases = set()
                threading.Thread(target=self._run, name="agentops-leases", daemon=True).start()
            self._leases.add(lease)
            self._cond.notify()

    def release(self, lease: Lease) -> None:
        """No further renewal of ``lease`` (a renewal under way may still land; it changes nothing then)."""
        with self._cond:
            self._leases.discard(lease)

    def holds(self, run_pk: int) -> bool:
        with self._cond:
            return any(lease.run_pk == run_pk for lease in self._leases)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._leases:
                    # Idle: hold no database connection between runs (a test database could not be dropped).
                    discard_connection()
                while not self._leases:
                    self._cond.wait()
                leases = list(self._leases)
            now = time.monotonic()
            for lease in leases:
                if lease.mark_in_flight is not None:
                    self._guarded(lease, lambda lease=lease: lease.mark_in_flight(MARK_AFTER))
                if lease.renew_at <= now:
                    self._guarded(lease, lambda lease=lease: self._renew(lease))
            with self._cond:
                if self._leases:
                    self._cond.wait(TICK)

    @staticmethod
    def _renew(lease: Lease) -> None:
        lease.renew_at = time.monotonic() + lease.seconds / 3
        ours, cancel = lifecycle.renew_lease(lease.run_pk, lease.worker, lease.seconds)
        lease.cancel_requested = lease.cancel_requested or cancel
        lease.lost = not ours
        if lease.seen is not None and ours:
            activity.touch(*lease.seen)

    @staticmethod
    def _guarded(lease: Lease, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # database blip: try again next time; the lease has slack
            log.warning("run.heartbeat_failed", run_id=lease.run_pk, exc_info=True)
            discard_connection()  # a connection the server closed would fail every later beat too


keeper = LeaseKeeper()
