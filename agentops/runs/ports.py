"""What runs need from the rooms above them, as ports the project installs once per process.

Runs sit below review, budgets and the guard's wiring (DESIGN.md §3): a run's step opens an escalation,
is priced from the ledger and calls the guard, yet importing those rooms would point the arrows up and close
import cycles. So runs name here the few operations they use, and ``agentops.wiring.install()`` hands in the
implementations: review's escalator, the budgets ledger, the guard's dependencies. ``AgentopsConfig.ready()``
calls it, so every process that runs ``django.setup()`` (web, Celery worker, management command, test) has
them before its first request, task or command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from agentops.runtime.cache import TwoLevelCache
from agentops.runtime.context import ToolPolicy
from agentops.runtime.guard import GuardDeps


class EscalationPort(Protocol):
    """The review queue, as runs use it."""

    def tool_policy(self, agent_name: str) -> ToolPolicy:
        """The escalation policy that decides whether an agent's tool call needs a human."""

    def open_for_step(self, run: Any, step: Any, *, reason: str, priority: str, payload: Mapping[str, Any]) -> int:
        """Open the escalation for a waiting step, inside the step's transaction; returns its id."""

    def withdraw_for_run(self, run_pk: int, *, why: str) -> int:
        """Close a cancelled run's open escalations; returns how many were closed."""

    def by_id(self, ids: Iterable[int]) -> Mapping[int, Any]:
        """Escalation rows by id (those that exist), with who claimed and who decided them."""

    def visible_ids(self, user: Any, ids: Iterable[int]) -> set[int]:
        """Which of these escalations ``user`` may see (experts see the expert queue, others do not)."""


@dataclass(frozen=True)
class RunPorts:
    """Everything runs reach above themselves. Callables, so that each is built lazily by its owner."""

    guard_deps: Callable[[], GuardDeps]  # the guard pipeline's dependencies (process-wide)
    tool_cache: Callable[[], TwoLevelCache]  # the cache of cacheable tools (process-wide)
    escalations: EscalationPort
    step_cost: Callable[[int, int], Decimal]  # (run id, step seq) -> what its ledger rows cost
    # The same as one SQL scalar expression over the parameters %(run)s and %(seq)s, so that the journal
    # prices a step inside the one statement that records it.
    step_cost_sql: str
    agents_changed: Callable[[], None]  # an agent's team changed: the budget directory re-reads
    run_calls: Callable[[int], list[dict[str, Any]]]  # a run's priced calls, as the run page lists them
    # The caches agents reach by name with ctx.cache (tool_results, user_profiles), process-wide.
    agent_caches: Callable[[], Mapping[str, TwoLevelCache]] | None = None


_installed: RunPorts | None = None
_lock = threading.Lock()


def install(ports: RunPorts) -> None:
    """Make ``ports`` the ones every caller in this process gets (installing again replaces them)."""
    global _installed
    with _lock:
        _installed = ports


def installed() -> bool:
    return _installed is not None


def current() -> RunPorts:
    """The installed ports; ImproperlyConfigured when this process never installed any."""
    ports = _installed
    if ports is None:
        raise ImproperlyConfigured(
            "agentops.runs has no ports installed: add 'agentops' to INSTALLED_APPS (its ready() calls "
            "agentops.wiring.install()) or call agentops.wiring.install() after django.setup()"
        )
    return ports
