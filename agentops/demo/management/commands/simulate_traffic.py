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

import os
import random
import signal
import threading
import time
import uuid

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agentops.client import AgentOps, ApiError, Unauthenticated
from agentops.demo.agents.openai_sdk import GATEWAY_DEMO_AGENT, ensure_gateway_demo_agent
from agentops.demo.scenarios import DEMO_AGENTS, INPUTS, FaultMix
from agentops.demo.simulation import (
    GATEWAY_SCOPES,
    REST_SCOPES,
    DemoSpend,
    HttpTraffic,
    KeyRing,
    Simulation,
    pacing_text,
)
from agentops.demo.traffic import AppAgent, PermissionAsker, Tally, TokenPacer
from agentops.runs.actions import agents as agent_actions
from agentops.runs.registry import load_agents


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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
        rows = {n: agent_actions.ensure_agent(n, description=registered[n].description) for n in names}
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
