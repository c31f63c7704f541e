"""Demo traffic: agents that reach a running agentops over HTTP the way real ones do, against faults.

    manage.py simulate_traffic [--url http://127.0.0.1:8000] --rate 2 --duration 60
                               [--agents support-refund,research] [--gateway-rate 4] [--fault-mix]
                               [--auto-decide 20] [--max-in-flight 200] [--seed 7]

Each agent gets an API key that this command creates at start and revokes at exit (nothing secret is left
on disk, and it works against whichever database the server and this command share):
- the REST agents (`support-refund`, `research`) start runs with agentops.client (`POST /api/v1/runs`;
  the workers execute them) at `--rate` runs/s, and about one start in three also asks permission for a
  risky action (`POST /api/v1/actions`: large refunds, customer emails, deletions, reports the agent is
  unsure of), then long-polls for the reviewer's decision;
- the `openai-sdk` agent, a plain openai SDK client on `<url>/v1`, sends chat completions through the
  gateway at `--gateway-rate` calls/s (default: twice --rate): small calls in sessions, streams, repeated
  FAQ questions at temperature 0 (cache hits), tool calls that escalate (`send_email`, `delete_…`), and
  long reports on the large model that bring its daily dollar budget (seed_demo's) near its limit.

The run inputs hit every path of the demo agents: consumer refunds, business refunds over $1,000
(high-value escalation), archived orders whose slow lookup is skipped (optional phase → low-confidence
escalation), mistyped order ids, partial refunds, research topics that repeat (cached searches). Every
refund's email waits for a reviewer; `--auto-decide S` plays the reviewer for this command's own runs and
permission requests (mostly approve) after S seconds, so a long simulation keeps flowing. `--fault-mix`
makes the providers fail now and then for the duration (simulated providers: their fault rate; a local
fault-injecting mock: its rates, plus a 40-second outage of one model every two minutes, which opens its
circuit breaker) and restores them on exit.

`--url` defaults to http://127.0.0.1:$WEB_PORT (set by `make run`), else $PORT, else 8000. When no --url is
given and no agentops server sharing this database answers there, runs start in-process
(`actions.start_run`) as they did before, without the gateway and permission traffic.

Bounded: at most `--max-in-flight` of its runs queued or running at once, a fixed number of threads for the
gateway calls and the permission requests (what does not fit is held back and counted), `--duration`
seconds (0 = until Ctrl-C). Network: the server at --url and, with `--fault-mix`, the mock's control
endpoint, both on loopback addresses.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from agentops.client import AgentOps, ApiError, Unauthenticated
from agentops.config import actions as config_actions
from agentops.demo.agents.tools import order_book
from agentops.demo.management.commands.seed_demo import GATEWAY_DEMO_AGENT, ensure_gateway_demo_agent
from agentops.demo.traffic import AppAgent, Outages, PermissionAsker, Tally, TokenPacer, Workers
from agentops.keys import actions as key_actions
from agentops.runs import actions

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
ACTION_SHARE = 0.35  # run starts after which the agent also asks permission for a risky action
GATEWAY_THREADS, ACTION_THREADS = 12, 16  # slow gateway calls, permission requests waiting for a reviewer
# At exit, how long calls under way may finish before the summary: short, because a process manager kills
# what has not ended a few seconds after its TERM (honcho: 5 s), and the summary must be out by then.
STOP_GRACE_SECONDS = 1.5
REST_SCOPES, GATEWAY_SCOPES = ["runs", "actions"], ["gateway"]


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


def reviewer_decision(rng: random.Random, kind: str, name: str, args: dict | None) -> dict:
    """What the simulated reviewer decides: mostly approve; sometimes reject or halve a refund."""
    if kind == "llm":
        return {"decision": "taken_over", "result": "A support specialist answered this one personally."}
    draw = rng.random()
    args = dict(args or {})
    if name == "issue_refund" and draw < 0.1 and args.get("amount"):
        args["amount"] = round(float(args["amount"]) / 2, 2)
        return {"decision": "modified", "arguments": args, "comment": "partial refund: half now, rest on return"}
    if draw > 0.88:
        return {"decision": "rejected", "comment": "needs a second look (simulated reviewer)"}
    return {"decision": "approved", "comment": "ok (simulated reviewer)"}


class FaultMix:
    """Makes the providers fail now and then (and a local mock's models go down for a while now and then),
    and puts them back as they were."""

    def __init__(self, rate: float, out):
        self.rate, self.out = rate, out
        self.simulated: dict[int, float] = {}
        self.mocks: list[str] = []
        self.outages: Outages | None = None

    def apply(self) -> None:
        from agentops.config.models import ModelRoute, Provider, RuntimeSettings

        mock_models: list[str] = []
        for provider in Provider.objects.filter(enabled=True):
            if provider.kind == Provider.Kind.SIMULATED:
                self.simulated[provider.pk] = provider.fault_rate
                provider.fault_rate = self.rate
                config_actions.save_runtime_object(provider)
                self.out(f"fault mix: simulated provider {provider.name} fails {self.rate:.0%} of calls")
            elif provider.kind == Provider.Kind.OPENAI and _is_loopback(provider.base_url):
                root = _mock_root(provider.base_url)
                rates = {fault: round(share * self.rate, 4) for fault, share in MOCK_FAULT_SHARES.items()}
                if _post(root + "/_mock/rates", {"model": "*", "rates": rates, "seed": 0}):
                    self.mocks.append(root)
                    self.out(f"fault mix: mock {root} fails {self.rate:.0%} of calls (503, 429, 500, reset, ...)")
                    routes = ModelRoute.objects.filter(primary_provider=provider).order_by("operation")
                    mock_models += [route.primary_model for route in routes]
                    default = RuntimeSettings.objects.filter(default_provider=provider).first()
                    mock_models += [default.default_model] if default is not None else []
        if self.mocks and mock_models:
            # The busiest model first (most routes; the default model answers what has none): its outage
            # opens its breaker soonest.
            models = [model for model, _ in Counter(mock_models).most_common()]
            self.outages = Outages(self.mocks, models, _post, self.out)

    def tick(self, now: float) -> None:
        if self.outages is not None:
            self.outages.tick(now)

    def restore(self) -> None:
        from agentops.config.models import Provider

        if self.outages is not None:
            self.outages.end()
        for pk, rate in self.simulated.items():
            provider = Provider.objects.filter(pk=pk).first()
            if provider is not None:
                provider.fault_rate = rate
                config_actions.save_runtime_object(provider)
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
    try:
        return httpx.post(url, json=payload, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def default_url() -> str:
    """The web server `make run` starts: WEB_PORT (honcho gives every Procfile process its own PORT, so the
    traffic process's PORT is not the web's), else PORT, else 8000."""
    return f"http://127.0.0.1:{os.environ.get('WEB_PORT') or os.environ.get('PORT') or '8000'}"


def web_answers(url: str, wait: float) -> bool:
    """Does an agentops web server answer /healthz at ``url`` (trying for up to ``wait`` seconds)?"""
    deadline = time.monotonic() + wait
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


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


class Command(BaseCommand):
    help = "Demo traffic over HTTP: REST agents start runs and ask permission, an openai-SDK app uses the gateway."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=None, help="the agentops web server (default http://127.0.0.1:$WEB_PORT)")
        parser.add_argument("--rate", type=float, default=1.0, help="runs started per second (default 1)")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60; 0 = until Ctrl-C)")
        parser.add_argument("--agents", default=",".join(DEMO_AGENTS), help="comma-separated agent names")
        parser.add_argument(
            "--gateway-rate",
            type=float,
            default=None,
            help=f"{GATEWAY_DEMO_AGENT} agent's gateway calls per second (default 2 x --rate; 0 = none)",
        )
        parser.add_argument("--fault-mix", action="store_true", help="make providers fail now and then meanwhile")
        parser.add_argument("--fault-rate", type=float, default=0.2, help="share of calls failing with --fault-mix")
        parser.add_argument("--max-in-flight", type=int, default=200, help="most of our runs queued/running at once")
        parser.add_argument(
            "--auto-decide", type=float, default=None, metavar="SECONDS", help="act as the reviewer after SECONDS"
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible inputs")
        parser.add_argument(
            "--tokens-per-minute",
            type=float,
            default=None,
            help="pace each agent to this many tokens a minute (default DEMO_TOKENS_PER_MINUTE; 0 = unpaced)",
        )
        parser.add_argument(
            "--time-scale",
            type=float,
            default=1.0,
            help="minutes of pacing allowance per real minute (default 1; tests check a day's pacing faster)",
        )

    def handle(
        self,
        *args,
        url,
        rate,
        duration,
        agents,
        gateway_rate,
        fault_mix,
        fault_rate,
        max_in_flight,
        auto_decide,
        seed,
        tokens_per_minute,
        time_scale,
        **kw,
    ):
        from agentops.demo.agents import load_agents

        if not 0 < rate <= 1000:
            raise CommandError("--rate must be above 0 and at most 1000 runs/second")
        if duration < 0:
            raise CommandError("--duration must be >= 0 (0 = until Ctrl-C)")
        if not 0 <= fault_rate <= 1:
            raise CommandError("--fault-rate must be between 0 and 1")
        tokens_per_minute = settings.DEMO_TOKENS_PER_MINUTE if tokens_per_minute is None else tokens_per_minute
        if not (0 <= tokens_per_minute <= 10**9 and 0 < time_scale <= 10**6):
            raise CommandError("--tokens-per-minute must be >= 0 and --time-scale above 0")
        gateway_rate = 2 * rate if gateway_rate is None else gateway_rate
        if not 0 <= gateway_rate <= 1000:
            raise CommandError("--gateway-rate must be between 0 and 1000 calls/second")
        names = [name.strip() for name in agents.split(",") if name.strip()]
        registered = load_agents()
        unknown = [n for n in names if n not in registered or n not in INPUTS]
        if not names or unknown:
            raise CommandError(f"unknown agents {unknown or names}; choose from {', '.join(INPUTS)}")
        rows = {n: actions.ensure_agent(n, description=registered[n].description) for n in names}
        rng = random.Random(seed)
        token = uuid.uuid4().hex[:6]
        keys = KeyRing(token)
        until = "until Ctrl-C" if duration == 0 else f"for {duration:g} s"
        self._say(f"simulate_traffic {token}: {rate:g} runs/s {until}, agents {', '.join(names)}")
        pacer = TokenPacer(tokens_per_minute, time_scale=time_scale)
        self._say(f"simulate_traffic {token}: {pacing_text(pacer)}")
        interrupted = False
        traffic = sim = faults = None
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a process manager stops us like Ctrl-C does
        try:
            traffic = self._connect((url or default_url()).rstrip("/"), url is not None, names, keys, token, seed)
            if traffic is not None:
                traffic.gateway_rate = gateway_rate
                if gateway_rate > 0:
                    ensure_gateway_demo_agent()
                    key = keys.create(GATEWAY_DEMO_AGENT, GATEWAY_SCOPES)
                    traffic.app = AppAgent(traffic.url, key, token=token, seed=seed, tally=traffic.tally)
                traffic.start_workers()
                gateway = f"{GATEWAY_DEMO_AGENT} (openai SDK) through {traffic.url}/v1 at {gateway_rate:g} calls/s"
                self._say(
                    f"simulate_traffic {token}: over HTTP: {', '.join(names)} through {traffic.url}/api/v1 "
                    f"(runs, permission requests)" + (f"; {gateway}" if traffic.app else "") + "; keys revoked at exit"
                )
            sim = Simulation(self, rows, rng, token, max_in_flight, auto_decide, traffic)
            sim.pacer, sim.spend = pacer, DemoSpend(token)
            faults = FaultMix(fault_rate, self._say) if fault_mix else None
            if faults is not None:
                faults.apply()
                sim.ticks.append(faults.tick)
            sim.loop(rate, duration)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
            try:
                if traffic is not None:
                    traffic.stop.set()
                if faults is not None:
                    faults.restore()
                if traffic is not None:
                    traffic.wind_down()
                if sim is not None:
                    sim.progress(final=True)
            finally:
                keys.revoke_all()
                if traffic is not None:
                    traffic.close()
                signal.signal(signal.SIGTERM, previous)
        if sim is None:
            return
        for line in sim.summary(faults):
            self._say(f"simulate_traffic {token}: {line}")
        self._say(
            f"simulate_traffic {token}: {'interrupted' if interrupted else 'done'}; started {sim.started} runs "
            f"(session ids sim-{token}-*)"
        )

    def _connect(
        self, url: str, explicit: bool, names: list[str], keys: KeyRing, token: str, seed: int | None
    ) -> HttpTraffic | None:
        """Keys and clients for the REST agents, once the server at ``url`` answers and knows our keys (it shares
        this database). None (runs in-process) when no --url was given and it does not; an error when it was."""
        if not web_answers(url, wait=60.0 if explicit else 0.0):
            if explicit:
                raise CommandError(f"no agentops web server answers at {url}/healthz")
            self._say(
                f"no agentops web server at {url}: runs start in-process (actions.start_run), without gateway "
                "or permission-request traffic (start `make run`, or pass --url)"
            )
            return None
        clients = {
            name: AgentOps(url, keys.create(name, REST_SCOPES), timeout=15, max_retries=2, long_poll_seconds=5)
            for name in names
        }
        try:
            clients[names[0]].list_runs(limit=1)
        except (ApiError, httpx.HTTPError) as exc:
            for client in clients.values():
                client.close()
            message = (
                f"the server at {url} does not know this command's API keys: it uses another database"
                if isinstance(exc, Unauthenticated)
                else f"the API at {url} did not answer: {exc}"
            )
            if explicit:
                raise CommandError(message) from None
            self._say(message + "; runs start in-process (actions.start_run) instead")
            return None
        tally, stop = Tally(), threading.Event()
        asker = PermissionAsker(clients, token=token, seed=seed, tally=tally, stop=stop)
        return HttpTraffic(url, clients, None, asker, 0.0, tally, stop)

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


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
        from django.db.models import F, Sum

        from agentops.runs.models import Run
        from budgets.models import Reservation, UsageRecord

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
        from agentops.wiring import breaker_registry

        try:
            snapshots = breaker_registry().snapshots()
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
        from agentops.runs.models import Run

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
            run, _ = actions.start_run(self.agents[name], data, session_id=session)
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
        from agentops.runs.models import Step

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
        from review import actions as review_actions
        from review.models import Escalation

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
