"""The demo traffic's loop (manage.py simulate_traffic): starts runs at a steady rate (over HTTP with its own
API keys, or in-process), sends the gateway app's calls and permission requests, plays the reviewer, paces
each agent's token spend and reports progress."""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from django.db.models import Count, F, Sum
from django.utils import timezone

from agentops import wiring
from agentops.client import AgentOps, ApiError
from agentops.demo.agents.openai_sdk import GATEWAY_DEMO_AGENT
from agentops.demo.scenarios import INPUTS, FaultMix, reviewer_decision
from agentops.demo.traffic import AppAgent, PermissionAsker, Tally, TokenPacer, Workers
from agentops.keys import actions as key_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step
from budgets.models import Reservation, UsageRecord
from review import actions as review_actions
from review.models import Escalation

ACTION_SHARE = 0.35  # run starts after which the agent also asks permission for a risky action
GATEWAY_THREADS, ACTION_THREADS = 12, 16  # slow gateway calls, permission requests waiting for a reviewer
# At exit, how long calls under way may finish before the summary: short, because a process manager kills
# what has not ended a few seconds after its TERM (honcho: 5 s), and the summary must be out by then.
STOP_GRACE_SECONDS = 1.5
REST_SCOPES, GATEWAY_SCOPES = ["runs", "actions"], ["gateway"]


class KeyRing:
    """The API keys this command made for its agents; all revoked at exit. Fresh keys per start rather than
    kept ones: no secret on disk, nothing to go stale when the database is reset or another one is used (the
    tests'), and a key is valid only while its traffic runs."""

    def __init__(self, token: str):
        self.name = f"simulate_traffic {token}"
        self.ids: dict[str, int] = {}

    def create(self, agent: str, scopes: list[str]) -> str:
        row, key = key_actions.create_api_key(agent, scopes=scopes, name=self.name, created_by="simulate_traffic")
        self.ids[agent] = row.pk
        return key

    def revoke_all(self) -> None:
        for key_id in self.ids.values():
            key_actions.revoke_api_key(key_id)


@dataclass
class HttpTraffic:
    """Everything that talks to the server over HTTP: the REST clients, the gateway app, the askers."""

    url: str
    clients: dict[str, AgentOps]
    app: AppAgent | None
    asker: PermissionAsker
    gateway_rate: float
    tally: Tally
    stop: threading.Event
    problems: deque = field(default_factory=lambda: deque(maxlen=50))
    gateway_workers: Workers | None = None
    action_workers: Workers | None = None

    def start_workers(self) -> None:
        self.action_workers = Workers(ACTION_THREADS, ACTION_THREADS, self.problem)
        if self.app is not None:
            self.gateway_workers = Workers(GATEWAY_THREADS, GATEWAY_THREADS, self.problem)

    def problem(self, exc: BaseException) -> None:
        self.tally.add("job_errors")
        self.problems.append(f"{type(exc).__name__}: {exc}"[:300])

    def wind_down(self) -> None:
        """No new jobs; give the calls under way a moment to finish (waiting askers stop polling)."""
        self.stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for workers in (self.gateway_workers, self.action_workers):
            if workers is not None:
                workers.stop(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        if self.app is not None:
            self.app.close()


def pacing_text(pacer: TokenPacer) -> str:
    if not pacer.paced:
        return "unpaced (--tokens-per-minute 0)"
    scale = f" (time scale {pacer.time_scale:g}: {pacer.time_scale:g} min of allowance per minute)"
    head = pacer.head_start_minutes
    return (
        f"paced to {pacer.tokens_per_minute:g} tokens/min per agent after a {head:g}-minute head start "
        f"({pacer.tokens_per_minute * (head + 1440):,.0f} a day at most)" + (scale if pacer.time_scale != 1 else "")
    )


class DemoSpend:
    """What a demo agent has spent since this command began, as the pacer counts it: its ledger tokens (cache
    hits cost none), the tokens its calls hold reserved right now, and for each of its runs still queued or
    running what its finished runs used on average (a run reserves only once a worker executes it; without a
    finished run yet, DEFAULT_RUN_TOKENS). Read at most every FRESH seconds per agent."""

    FRESH = 0.5
    DEFAULT_RUN_TOKENS = 600

    def __init__(self, token: str):
        self.token, self.since = token, timezone.now()
        self._read: dict[str, tuple[float, int]] = {}

    def __call__(self, agent: str) -> int:
        now = time.monotonic()
        hit = self._read.get(agent)
        if hit is not None and now - hit[0] < self.FRESH:
            return hit[1]
        spent = self.read(agent)
        self._read[agent] = (now, spent)
        return spent

    def read(self, agent: str) -> int:
        ledger = UsageRecord.objects.filter(agent=agent, created_at__gte=self.since, cached=False).aggregate(
            tokens=Sum(F("input_tokens") + F("output_tokens"))
        )["tokens"]
        held = Reservation.objects.filter(
            agent=agent, status=Reservation.Status.HELD, created_at__gte=self.since
        ).aggregate(tokens=Sum("tokens"))["tokens"]
        runs = Counter(
            dict(
                Run.objects.filter(agent__name=agent, session_id__startswith=f"sim-{self.token}-")
                .values_list("status")
                .order_by()
                .annotate(n=Count("pk"))
            )
        )
        unfinished = runs["queued"] + runs["running"]
        finished = sum(runs.values()) - unfinished
        per_run = (ledger or 0) / finished if finished and ledger else self.DEFAULT_RUN_TOKENS
        return int((ledger or 0) + (held or 0) + unfinished * per_run)


class Ticker:
    """Due times at a steady rate from ``began``: the n-th is due at began + (n - 1) / rate."""

    def __init__(self, rate: float, began: float):
        self.rate, self.began, self.count = rate, began, 0

    @property
    def next_at(self) -> float:
        return self.began + self.count / self.rate if self.rate > 0 else math.inf

    def due(self, now: float) -> bool:
        if now >= self.next_at:
            self.count += 1
            return True
        return False


class BreakerWatch:
    """Counts circuit breakers opening while we run (any process's): each opening has its own opened_at, and
    a breaker stays open for its recovery timeout, far longer than the progress interval we look at."""

    def __init__(self):
        self.since = time.time()
        self.openings: set[tuple[str, float]] = set()

    def observe(self) -> None:
        try:
            snapshots = wiring.breaker_registry().snapshots()
        except Exception:  # Redis away: the breakers themselves cope; we just count nothing this time
            return
        for snap in snapshots:
            opened = snap.get("opened_at") or 0
            if snap["state"] != "closed" and not snap.get("forced") and opened >= self.since:
                self.openings.add((snap["name"], opened))

    @property
    def names(self) -> list[str]:
        return sorted({name for name, _ in self.openings})


class Simulation:
    def __init__(self, command, agents: dict, rng: random.Random, token: str, max_in_flight: int, auto_decide, traffic):
        self.command, self.agents, self.rng, self.token = command, agents, rng, token
        self.max_in_flight, self.auto_decide = max_in_flight, auto_decide
        self.traffic: HttpTraffic | None = traffic
        self.started = self.held_back = self.decided = self.refused = 0
        self.by_agent: Counter = Counter()
        self.statuses: Counter = Counter()
        self.first_pk: int | None = None
        self.pacer = TokenPacer(0)  # unpaced unless the command sets one (with its DemoSpend)
        self.spend = None
        self.waiting_since: dict[int, float] = {}
        self.breakers = BreakerWatch()
        self.ticks: list = []
        self.said: set[str] = set()
        self.action_rng = random.Random(rng.random())  # its own draws, fixed by --seed too
        self.began = time.monotonic()
        self.tty = sys.stdout.isatty()

    def our_runs(self):
        return Run.objects.filter(pk__gte=self.first_pk or 0, session_id__startswith=f"sim-{self.token}-")

    def loop(self, rate: float, duration: float) -> None:
        end = self.began + duration if duration > 0 else math.inf
        names = list(self.agents)
        runs = Ticker(rate, self.began)
        app = self.traffic.app if self.traffic is not None else None
        calls = Ticker(self.traffic.gateway_rate if app is not None else 0.0, self.began)
        next_progress = self.began
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for tick in self.ticks:
                tick(now)
            if runs.due(now):
                if self.in_flight() >= self.max_in_flight:
                    self.held_back += 1
                    continue
                name = names[self.rng.randrange(len(names))]
                if self.pacer.allows(name, lambda name=name: self.spend(name), now):
                    self.start(name, runs.count)
                continue
            if calls.due(now):
                if not self.pacer.allows(GATEWAY_DEMO_AGENT, lambda: self.spend(GATEWAY_DEMO_AGENT), now):
                    continue
                if not self.traffic.gateway_workers.submit(app.next_call()):
                    self.traffic.tally.add("gateway_held_back")
                continue
            if now >= next_progress:
                next_progress = now + (1.0 if self.tty else 5.0)
                self.refresh()
                if self.auto_decide is not None:
                    self.decide_waiting()
                self.progress()
            wake = min(runs.next_at, calls.next_at, next_progress, end)
            time.sleep(max(0.0, min(wake - now, 0.25)))

    def start(self, name: str, index: int) -> None:
        data = INPUTS[name](self.rng)
        session = f"sim-{self.token}-{index % 25:02d}"
        if self.traffic is None:
            run, _ = lifecycle.start_run(self.agents[name], data, session_id=session)
            run_id = run.pk
        else:
            try:
                run_id = (
                    self.traffic.clients[name]
                    .start_run(input=data, session_id=session, idempotency_key=f"sim-{self.token}-{index}")
                    .id
                )
            except (ApiError, httpx.HTTPError) as exc:
                self.refused += 1
                self.say_once(f"a run start failed: {exc}")
                return
            self.ask_permission_sometimes(name, index)
        self.first_pk = min(self.first_pk or run_id, run_id)
        self.started += 1
        self.by_agent[name] += 1
        self.statuses["queued"] += 1

    def ask_permission_sometimes(self, name: str, index: int) -> None:
        if self.started and self.action_rng.random() >= ACTION_SHARE:  # the first start always asks
            return
        job = self.traffic.asker.next_request(name, index)
        if job is not None and not self.traffic.action_workers.submit(job):
            self.traffic.tally.add("actions_held_back")

    def in_flight(self) -> int:
        return self.statuses["queued"] + self.statuses["running"]

    def refresh(self) -> None:
        self.breakers.observe()
        if self.traffic is not None:
            while self.traffic.problems:
                self.say_once(f"a traffic job failed: {self.traffic.problems.popleft()}")
        if self.first_pk is None:
            return
        counts = self.our_runs().values_list("status").order_by().annotate(n=Count("pk"))
        self.statuses = Counter(dict(counts))

    def decide_waiting(self) -> None:
        now = time.monotonic()
        waiting = Step.objects.filter(
            run__in=self.our_runs().filter(status="waiting_human"), status=Step.Status.WAITING_HUMAN
        ).only("pk", "run_id", "seq", "kind", "name", "arguments", "escalation_id")
        current = set()
        for step in waiting:
            current.add(step.pk)
            since = self.waiting_since.setdefault(step.pk, now)
            if now - since < self.auto_decide:
                continue
            decision = reviewer_decision(self.rng, step.kind, step.name, (step.arguments or {}).get("args"))
            if self.decide(step, decision):
                self.decided += 1
        self.waiting_since = {pk: t for pk, t in self.waiting_since.items() if pk in current}
        self.decide_api_escalations()

    def decide_api_escalations(self) -> None:
        """Our permission requests and gateway tool calls (escalations with no run) waiting longer than
        --auto-decide seconds."""
        due = Escalation.objects.filter(
            source="api",
            state__in=Escalation.OPEN_STATES,
            session_id__startswith=f"sim-{self.token}-",
            created_at__lte=timezone.now() - timedelta(seconds=self.auto_decide),
        ).only("pk", "kind", "operation", "arguments")[:100]
        for escalation in due:
            decision = reviewer_decision(self.rng, escalation.kind, escalation.operation, escalation.arguments)
            try:
                review_actions.decide(
                    escalation.pk,
                    None,
                    decision["decision"],
                    arguments=decision.get("arguments"),
                    result=decision.get("result"),
                    comment=decision.get("comment", ""),
                )
            except (review_actions.DecisionConflict, ValueError):
                continue
            self.decided += 1

    @staticmethod
    def decide(step, decision: dict) -> bool:
        """Decide like a reviewer: through the review queue when the step has an escalation (its audit
        log shows a system decision), else straight on the step. False when someone decided first."""
        if step.escalation_id:
            try:
                review_actions.decide(
                    step.escalation_id,
                    None,
                    decision["decision"],
                    arguments=decision.get("arguments"),
                    result=decision.get("result"),
                    comment=decision.get("comment", ""),
                )
                return True
            except (review_actions.DecisionConflict, ValueError):
                return False
        try:
            lifecycle.decide_step(step.run_id, step.seq, decision)
            return True
        except ValueError:
            return False

    def say_once(self, line: str) -> None:
        """A problem line, once per distinct text (a server that is down would otherwise fill the log)."""
        if line not in self.said and len(self.said) < 100:
            self.said.add(line)
            self.command.stdout.write(("\n" if self.tty else "") + line)

    def progress(self, final: bool = False) -> None:
        if final:
            self.refresh()
        elapsed = time.monotonic() - self.began
        agents = ", ".join(f"{name} {n}" for name, n in sorted(self.by_agent.items()))
        states = " ".join(
            f"{s} {self.statuses.get(s, 0)}"
            for s in ("queued", "running", "waiting_human", "succeeded", "failed", "cancelled")
        )
        line = f"[{elapsed:6.1f}s] started {self.started} ({agents or '-'}) | {states}"
        if self.held_back:
            line += f" | held back {self.held_back}"
        paced = sum(self.pacer.held(name) for name in (*self.agents, GATEWAY_DEMO_AGENT))
        if paced:
            line += f" | paced {paced}"
        if self.auto_decide is not None:
            line += f" | decided {self.decided}"
        if self.traffic is not None:
            t = self.traffic.tally
            line += f" | actions {t['actions_asked']} (escalated {t['actions_escalated']})"
            if self.traffic.app is not None:
                line += (
                    f" | gateway {t['gateway_calls']} (cached {t['gateway_cache_hits']}, "
                    f"tool escalations {t['gateway_tool_escalations']}, budget refused {t['gateway_budget_refused']}, "
                    f"errors {t['gateway_errors'] + t['gateway_rate_limited']})"
                )
        if self.breakers.openings:
            line += f" | breakers opened {len(self.breakers.openings)}"
        if self.tty and not final:
            self.command.stdout.write("\r" + line.ljust(120), ending="")
        else:
            self.command.stdout.write(("\r" if self.tty else "") + line)
        self.command.stdout.flush()

    def summary(self, faults: FaultMix | None) -> list[str]:
        """The closing lines: what went over HTTP, what the gateway did, what broke."""
        lines = []
        if self.traffic is not None:
            t = self.traffic.tally
            lines.append(
                f"REST API: {self.started} runs started ({self.refused} failed to start); "
                f"{t['actions_asked']} permission requests ({t['actions_approved_at_once']} approved at once, "
                f"{t['actions_escalated']} escalated, {t['actions_allowed']} allowed and {t['actions_rejected']} "
                f"rejected by a reviewer, {t['actions_held_back']} held back, {t['actions_errors']} failed)"
            )
            if self.traffic.app is not None:
                lines.append(
                    f"gateway ({GATEWAY_DEMO_AGENT}, openai SDK): {t['gateway_calls']} calls, {t['gateway_ok']} "
                    f"answered ({t['gateway_streamed']} streamed, {t['gateway_cache_hits']} from the cache, "
                    f"{t['gateway_fallbacks']} by a fallback, {t['gateway_tool_escalations']} tool calls escalated), "
                    f"{t['gateway_budget_refused']} refused by its budget, {t['gateway_rate_limited']} rate limited, "
                    f"{t['gateway_errors']} failed, {t['gateway_held_back']} held back"
                )
        broke = f"breakers opened {len(self.breakers.openings)}"
        if self.breakers.names:
            broke += f" ({', '.join(self.breakers.names)})"
        if faults is not None and faults.outages is not None:
            broke += f"; outages {faults.outages.count}"
        lines.append(broke + f"; decided as the reviewer {self.decided}")
        if self.pacer.paced:
            agents = [*self.agents, *([GATEWAY_DEMO_AGENT] if self.traffic is not None and self.traffic.app else [])]
            spent = ", ".join(f"{name} {self.spend.read(name)}" for name in agents)
            held = ", ".join(f"{name} {self.pacer.held(name)}" for name in agents)
            lines.append(f"{pacing_text(self.pacer)}; tokens since start: {spent}; held back by the pace: {held}")
        return lines
