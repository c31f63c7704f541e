"""Start demo agent runs at a steady rate, with varied realistic inputs, and show how they fare.

    manage.py simulate_traffic --rate 2 --duration 60 [--agents support-refund,research] [--fault-mix]
                               [--auto-decide 20] [--max-in-flight 200] [--seed 7]

Runs start through `actions.start_run` (the workers execute them). The input mix hits every path of the
demo agents: consumer refunds, business refunds over $1,000 (high-value escalation), archived orders
whose slow lookup is skipped (optional phase → low-confidence escalation), mistyped order ids, partial
refunds, research topics that repeat (cached searches). Every refund's email waits for a reviewer;
`--auto-decide S` plays the reviewer for this command's own runs (mostly approve) after S seconds, so a
long simulation keeps flowing. `--fault-mix` makes the providers fail now and then for the duration
(simulated providers: their fault rate; a local fault-injecting mock: its rates) and restores them on exit.

Bounded: at most `--max-in-flight` of its runs queued or running at once (starts beyond that are held
back and counted), `--duration` seconds (0 = until Ctrl-C). No network, except what the runs do and the
mock's control endpoint on a loopback address with `--fault-mix`.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from agentops import actions
from agentops.agents.tools import order_book

DEMO_AGENTS = ("support-refund", "research")
REFUND_MESSAGES = (
    "My {product} arrived broken. I want my money back.",
    "The {product} stopped working after two days, please refund me.",
    "I was charged for the {product} but I cancelled the order last week.",
    "Wrong item: I ordered the {product} and got something else. Refund please.",
    "The {product} is fine but I no longer need it, can I get a refund?",
    "Hi, the {product} came with a missing part. I'd like a partial refund.",
    "This is the third time I'm asking!! Refund the {product} NOW.",
    "Thanks for the quick delivery, unfortunately the {product} does not fit. Refund?",
)
TOPICS = (
    "solid-state batteries",
    "retrieval-augmented generation",
    "carbon capture at cement plants",
    "CRISPR base editing",
    "heat pumps in cold climates",
    "post-quantum cryptography migration",
    "microplastics in drinking water",
    "four-day work week trials",
    "small modular nuclear reactors",
    "LLM evaluation methods",
    "urban vertical farming",
    "sodium-ion batteries",
    "the economics of open-source maintenance",
    "antibiotic resistance surveillance",
    "green hydrogen for steelmaking",
)
AUDIENCES = ("engineers", "executives", "a general audience", "policy makers", "students")
# What a fault mix injects into a local mock (per model, probabilities per request).
MOCK_FAULT_SHARES = {"503": 0.35, "429:1": 0.25, "500": 0.15, "reset": 0.1, "malformed": 0.1, "refusal": 0.05}


def refund_input(rng: random.Random) -> dict:
    """A customer's refund request: mostly consumer orders, some business orders (> $1,000), a few
    archived orders (slow lookup) and mistyped ids, a quarter of them partial refunds."""
    draw = rng.random()
    if draw < 0.12:
        order_id = f"B2B-{rng.randint(1000, 9999)}"
    elif draw < 0.17:
        order_id = f"ARCH-{rng.randint(100000, 999999)}"
    elif draw < 0.20:
        order_id = f"#{rng.randint(100, 999)}"
    else:
        order_id = f"A-{rng.randint(10000, 99999)}"
    order = order_book(order_id)
    data = {
        "order_id": order_id,
        "message": rng.choice(REFUND_MESSAGES).format(product=order.get("product", "order")),
    }
    if order.get("found") and (order.get("archived") or rng.random() < 0.25):
        # archived orders: the customer states what they paid (the lookup will not answer in time)
        share = 1.0 if order.get("archived") else rng.choice((0.25, 0.5))
        data["amount"] = round(order["total"] * share, 2)
        if order.get("archived"):
            data["email"] = order["email"]
    return data


def research_input(rng: random.Random) -> dict:
    return {"topic": rng.choice(TOPICS), "depth": rng.choice((2, 3, 3, 4)), "audience": rng.choice(AUDIENCES)}


INPUTS = {"support-refund": refund_input, "research": research_input}


def reviewer_decision(rng: random.Random, step) -> dict:
    """What the simulated reviewer decides: mostly approve; sometimes reject or halve a refund."""
    if step.kind == "llm":
        return {"decision": "taken_over", "result": "A support specialist answered this one personally."}
    draw = rng.random()
    args = dict((step.arguments or {}).get("args") or {})
    if step.name == "issue_refund" and draw < 0.1 and args.get("amount"):
        args["amount"] = round(float(args["amount"]) / 2, 2)
        return {"decision": "modified", "arguments": args, "comment": "partial refund: half now, rest on return"}
    if draw > 0.88:
        return {"decision": "rejected", "comment": "needs a second look (simulated reviewer)"}
    return {"decision": "approved", "comment": "ok (simulated reviewer)"}


class FaultMix:
    """Makes the providers fail now and then, and puts them back as they were."""

    def __init__(self, rate: float, out):
        self.rate, self.out = rate, out
        self.simulated: dict[int, float] = {}
        self.mocks: list[str] = []

    def apply(self) -> None:
        from agentops.models import Provider

        for provider in Provider.objects.filter(enabled=True):
            if provider.kind == Provider.Kind.SIMULATED:
                self.simulated[provider.pk] = provider.fault_rate
                provider.fault_rate = self.rate
                actions.save_runtime_object(provider)
                self.out(f"fault mix: simulated provider {provider.name} fails {self.rate:.0%} of calls")
            elif provider.kind == Provider.Kind.OPENAI and _is_loopback(provider.base_url):
                root = _mock_root(provider.base_url)
                rates = {fault: round(share * self.rate, 4) for fault, share in MOCK_FAULT_SHARES.items()}
                if _post(root + "/_mock/rates", {"model": "*", "rates": rates, "seed": 0}):
                    self.mocks.append(root)
                    self.out(f"fault mix: mock {root} fails {self.rate:.0%} of calls (503, 429, 500, reset, ...)")

    def restore(self) -> None:
        from agentops.models import Provider

        for pk, rate in self.simulated.items():
            provider = Provider.objects.filter(pk=pk).first()
            if provider is not None:
                provider.fault_rate = rate
                actions.save_runtime_object(provider)
        for root in self.mocks:
            _post(root + "/_mock/rates", {"model": "*", "rates": {}, "seed": 0})
        if self.simulated or self.mocks:
            self.out("fault mix: providers restored")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in {"127.0.0.1", "localhost", "::1"}


def _mock_root(base_url: str) -> str:
    parsed = urlparse(base_url)
    return f"{parsed.scheme}://{parsed.netloc}"


def _post(url: str, payload: dict) -> bool:
    import httpx

    try:
        return httpx.post(url, json=payload, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Command(BaseCommand):
    help = "Start demo agent runs at a given rate (runs/second) for a while, with varied realistic inputs."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=1.0, help="runs started per second (default 1)")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60; 0 = until Ctrl-C)")
        parser.add_argument("--agents", default=",".join(DEMO_AGENTS), help="comma-separated agent names")
        parser.add_argument("--fault-mix", action="store_true", help="make providers fail now and then meanwhile")
        parser.add_argument("--fault-rate", type=float, default=0.2, help="share of calls failing with --fault-mix")
        parser.add_argument("--max-in-flight", type=int, default=200, help="most of our runs queued/running at once")
        parser.add_argument(
            "--auto-decide", type=float, default=None, metavar="SECONDS", help="act as the reviewer after SECONDS"
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible inputs")

    def handle(self, *args, rate, duration, agents, fault_mix, fault_rate, max_in_flight, auto_decide, seed, **kw):
        from agentops.agents import load_agents

        if not 0 < rate <= 1000:
            raise CommandError("--rate must be above 0 and at most 1000 runs/second")
        if duration < 0:
            raise CommandError("--duration must be >= 0 (0 = until Ctrl-C)")
        if not 0 <= fault_rate <= 1:
            raise CommandError("--fault-rate must be between 0 and 1")
        names = [name.strip() for name in agents.split(",") if name.strip()]
        registered = load_agents()
        unknown = [n for n in names if n not in registered or n not in INPUTS]
        if not names or unknown:
            raise CommandError(f"unknown agents {unknown or names}; choose from {', '.join(INPUTS)}")
        rows = {n: actions.ensure_agent(n, description=registered[n].description) for n in names}
        rng = random.Random(seed)
        token = uuid.uuid4().hex[:6]
        sim = Simulation(self, rows, rng, token, max_in_flight, auto_decide)
        faults = FaultMix(fault_rate, self._say) if fault_mix else None
        until = "until Ctrl-C" if duration == 0 else f"for {duration:g} s"
        self._say(f"simulate_traffic {token}: {rate:g} runs/s {until}, agents {', '.join(names)}")
        interrupted = False
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a process manager stops us like Ctrl-C does
        try:
            if faults is not None:
                faults.apply()
            sim.loop(rate, duration)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the restore short
            try:
                if faults is not None:
                    faults.restore()
                sim.progress(final=True)
            finally:
                signal.signal(signal.SIGTERM, previous)
        self._say(
            f"simulate_traffic {token}: {'interrupted' if interrupted else 'done'}; started {sim.started} runs "
            f"(session ids sim-{token}-*)"
        )

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


class Simulation:
    def __init__(self, command, agents: dict, rng: random.Random, token: str, max_in_flight: int, auto_decide):
        self.command, self.agents, self.rng, self.token = command, agents, rng, token
        self.max_in_flight, self.auto_decide = max_in_flight, auto_decide
        self.started = self.held_back = self.decided = 0
        self.by_agent: Counter = Counter()
        self.statuses: Counter = Counter()
        self.first_pk: int | None = None
        self.waiting_since: dict[int, float] = {}
        self.began = time.monotonic()
        self.tty = sys.stdout.isatty()

    def our_runs(self):
        from agentops.models import Run

        return Run.objects.filter(pk__gte=self.first_pk or 0, session_id__startswith=f"sim-{self.token}-")

    def loop(self, rate: float, duration: float) -> None:
        end = self.began + duration if duration > 0 else math.inf
        names = list(self.agents)
        index = 0
        next_progress = self.began
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = self.began + index / rate
            if now >= due:
                index += 1
                if self.in_flight() >= self.max_in_flight:
                    self.held_back += 1
                else:
                    self.start(names[self.rng.randrange(len(names))], index)
                continue
            if now >= next_progress:
                next_progress = now + (1.0 if self.tty else 5.0)
                self.refresh()
                if self.auto_decide is not None:
                    self.decide_waiting()
                self.progress()
            time.sleep(max(0.0, min(due - now, next_progress - now, end - now, 0.25)))

    def start(self, name: str, index: int) -> None:
        data = INPUTS[name](self.rng)
        run, _ = actions.start_run(self.agents[name], data, session_id=f"sim-{self.token}-{index % 25:02d}")
        self.first_pk = self.first_pk or run.pk
        self.started += 1
        self.by_agent[name] += 1
        self.statuses["queued"] += 1

    def in_flight(self) -> int:
        return self.statuses["queued"] + self.statuses["running"]

    def refresh(self) -> None:
        if self.first_pk is None:
            return
        counts = self.our_runs().values_list("status").order_by().annotate(n=Count("pk"))
        self.statuses = Counter(dict(counts))

    def decide_waiting(self) -> None:
        from agentops.models import Step

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
            if self.decide(step, reviewer_decision(self.rng, step)):
                self.decided += 1
        self.waiting_since = {pk: t for pk, t in self.waiting_since.items() if pk in current}

    @staticmethod
    def decide(step, decision: dict) -> bool:
        """Decide like a reviewer: through the review queue when the step has an escalation (its audit
        log shows a system decision), else straight on the step. False when someone decided first."""
        if step.escalation_id:
            from review import actions as review_actions

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
            actions.decide_step(step.run_id, step.seq, decision)
            return True
        except ValueError:
            return False

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
        if self.auto_decide is not None:
            line += f" | decided {self.decided}"
        if self.tty and not final:
            self.command.stdout.write("\r" + line.ljust(120), ending="")
        else:
            self.command.stdout.write(("\r" if self.tty else "") + line)
        self.command.stdout.flush()
