"""The demo's agents that live outside agentops, for ``manage.py simulate_traffic``: they reach it over HTTP only.

- ``AppAgent``: a plain ``openai`` SDK application (a shop's support assistant) pointed at the gateway (/v1).
  It knows nothing of agentops but the base URL, its key and the ``X-Session-Id`` / ``X-Operation`` headers:
  small chat turns in a handful of sessions, streamed answers, FAQ look-ups at temperature 0 (repeats come
  from the gateway's cache), tool calls the escalation policy flags (``send_email``, ``delete_…``), and now
  and then a long report on the large model, which is what fills its daily dollar budget. Refused for
  quota (429 ``insufficient_quota``) it does what a careful app does: for a while it answers only FAQ
  questions (the gateway's cache answers those at no cost), then tries a paid call again — so raising the
  budget on /budgets brings its traffic back within a minute.
- ``PermissionAsker``: the REST agents asking permission for risky actions (``POST /api/v1/actions`` with
  agentops.client) and long-polling for the reviewer's decision before they act.
- ``Workers``: daemon threads, so slow calls (upstream retries and back-offs, reviewers) never stall the
  schedule and can never keep the process alive after the command ends.
- ``Outages``: a total outage of one model on the fault-injecting mock now and then, long enough to open
  its circuit breaker.

Imports nothing from Django: the management command wires these to the database-side parts.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

import httpx
import openai

from agentops.client import AgentOps, ApiError

# --- counting, from many threads --------------------------------------------------------------------------


class Tally:
    """Counters several threads add to."""

    def __init__(self) -> None:
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]


class Workers:
    """``size`` daemon threads working through a queue of at most ``backlog`` jobs."""

    def __init__(self, size: int, backlog: int, on_error: Callable[[BaseException], None]) -> None:
        self.jobs: queue.Queue = queue.Queue(maxsize=backlog)
        self.on_error = on_error
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"demo-traffic-{n}", daemon=True) for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False (nothing queued) when the backlog is full."""
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def stop(self, grace: float) -> int:
        """Drop the jobs not started, wait at most ``grace`` seconds for the running ones, and end the threads
        once they are done; returns how many jobs were still running (their threads die with the process)."""
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        deadline = time.monotonic() + grace
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in self._threads:
            try:
                self.jobs.put_nowait(None)
            except queue.Full:
                break
        return self.busy

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self._lock:
                self._busy += 1
            try:
                job()
            except Exception as exc:  # one failed job must not end the thread
                self.on_error(exc)
            finally:
                with self._lock:
                    self._busy -= 1


# --- pacing ----------------------------------------------------------------------------------------------


class TokenPacer:
    """Paces each demo agent to ``tokens_per_minute``: an agent may start a call (or a run) only while what it
    has spent since the traffic began (ledger plus held reservations plus what its queued runs will likely
    use, measured by the caller) is below its allowance, ``tokens_per_minute`` × (``head_start_minutes`` +
    the minutes since it began). Over a day an agent so spends about ``tokens_per_minute`` × 1440 tokens,
    plus at most one call's or run's worth beyond its allowance. The head start (an hour's worth) lets a
    newcomer to the demo see every kind of call in its first minute. Unpaced when ``tokens_per_minute`` is 0.

    ``time_scale`` runs the allowance's clock faster (60: a minute of allowance per real second), so a test
    can check a day's pacing in a minute; the demo itself runs at 1."""

    def __init__(
        self,
        tokens_per_minute: float,
        *,
        time_scale: float = 1.0,
        head_start_minutes: float = 60.0,
        began: float | None = None,
    ) -> None:
        if tokens_per_minute < 0 or time_scale <= 0 or head_start_minutes < 0:
            raise ValueError("tokens_per_minute and head_start_minutes must be >= 0, time_scale > 0")
        self.tokens_per_minute, self.time_scale = tokens_per_minute, time_scale
        self.head_start_minutes = head_start_minutes
        self.began = time.monotonic() if began is None else began
        self._held: Counter = Counter()
        self._lock = threading.Lock()

    @property
    def paced(self) -> bool:
        return self.tokens_per_minute > 0

    def minutes(self, now: float) -> float:
        """Minutes of allowance clock since the traffic began (real minutes × time_scale)."""
        return max(now - self.began, 0.0) * self.time_scale / 60.0

    def allowance(self, now: float) -> float:
        return self.tokens_per_minute * (self.head_start_minutes + self.minutes(now))

    def allows(self, agent: str, spent: Callable[[], float], now: float) -> bool:
        """May ``agent`` start something now? ``spent`` is read only when pacing is on; a refusal is counted."""
        if not self.paced or spent() < self.allowance(now):
            return True
        with self._lock:
            self._held[agent] += 1
        return False

    def held(self, agent: str) -> int:
        with self._lock:
            return self._held[agent]


# --- the OpenAI SDK application ---------------------------------------------------------------------------

QUESTIONS = (
    "Where is my order {order}? It was due yesterday.",
    "Can I change the delivery address for order {order}?",
    "The parcel for {order} arrived damaged, what now?",
    "Do you have the blue version of the kettle in stock?",
    "I was charged twice for order {order}.",
    "How do I return a gift without the receipt?",
    "Can you explain the difference between the two warranty plans?",
)
FAQ = (
    "What is your refund policy?",
    "How long does standard shipping take?",
    "Do you ship to Canada?",
    "How do I change my delivery address?",
    "Which payment methods do you accept?",
)
REPORT_TOPICS = ("this week's refund requests", "complaints about late deliveries", "the most returned products")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by id",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Email the customer",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
                "required": ["to", "body"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "delete_customer_data",
            "description": "Erase a customer's personal data (GDPR request)",
            "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}}},
        },
    },
]
# What the app does first (a newcomer sees every kind of call within seconds), then a weighted mix.
OPENING = ("chat", "report", "faq", "tool", "stream", "faq", "tool", "chat", "report")
MIX = {"chat": 0.45, "faq": 0.18, "stream": 0.12, "tool": 0.15, "report": 0.10}
SMALL_MODELS = ("classify", "response")  # route names: the mock's small model first, then the backup
LARGE_MODEL = "summarize"  # a route on the mock's large model
SESSIONS = 8
QUOTA_PAUSE_SECONDS = 30.0  # after a quota refusal, only FAQ questions (cache hits cost nothing) for this long


class AppAgent:
    """A support assistant written against the plain OpenAI SDK, talking to agentops' gateway."""

    def __init__(self, base_url: str, api_key: str, *, token: str, seed: int | None, tally: Tally, timeout=45.0):
        self.client = openai.OpenAI(
            base_url=base_url.rstrip("/") + "/v1", api_key=api_key, max_retries=2, timeout=timeout
        )
        self.token, self.tally = token, tally
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._opening = iter(OPENING)
        self._seen: Counter = Counter()
        self.thrifty_until = 0.0

    def close(self) -> None:
        self.client.close()

    def next_call(self) -> Callable[[], None]:
        """The next call to make, chosen here on the scheduling thread (a seed gives the same sequence)."""
        with self._lock:
            kind = next(self._opening, None)
            opening = kind is not None
            if kind is None:
                kind = self._draw()
            if time.monotonic() < self.thrifty_until:
                kind, opening = "faq", False
            seen = self._seen[kind] if opening else None
            self._seen[kind] += 1
            session = f"sim-{self.token}-gw-{self.rng.randrange(SESSIONS):02d}"
            order = f"A-{self.rng.randint(10000, 99999)}"
            if kind == "chat":
                question, model = self.rng.choice(QUESTIONS).format(order=order), self.rng.choice(SMALL_MODELS)
                return lambda: self.chat(session, question, model)
            if kind == "faq":
                question = FAQ[0] if opening else self.rng.choice(FAQ)  # the opening asks it twice: a cache hit
                return lambda: self.faq(session, question)
            if kind == "stream":
                question = self.rng.choice(QUESTIONS).format(order=order)
                return lambda: self.stream(session, question)
            if kind == "tool":
                proposal = self._tool_call(order, seen)
                return lambda: self.tool(session, order, proposal)
            topic = self.rng.choice(REPORT_TOPICS)
            return lambda: self.report(session, topic)

    def _draw(self) -> str:
        draw, total = self.rng.random(), 0.0
        for kind, share in MIX.items():
            total += share
            if draw < total:
                return kind
        return "chat"

    def _tool_call(self, order: str, opening_turn: int | None) -> dict:
        """What the (mock) model proposes: an email or a data erasure (both escalate) or a harmless look-up.
        The opening proposes an email, then an erasure."""
        customer = f"C-{self.rng.randint(1000, 9999)}"
        draw = self.rng.random() if opening_turn is None else 0.5 * opening_turn
        if draw < 0.4:
            return {"name": "send_email", "arguments": {"to": "customer@example.com", "subject": order, "body": "…"}}
        if draw < 0.6:
            return {"name": "delete_customer_data", "arguments": {"customer_id": customer}}
        return {"name": "lookup_order", "arguments": {"order_id": order}}

    # -- the calls (on a worker thread)

    def chat(self, session: str, question: str, model: str) -> None:
        messages = [
            {"role": "system", "content": "You are the support assistant of a small online shop. Be brief."},
            {"role": "user", "content": question},
        ]
        self._create("chat", session, model=model, messages=messages, max_tokens=80, temperature=0.7)

    def faq(self, session: str, question: str) -> None:
        messages = [{"role": "user", "content": question}]
        self._create("faq", session, model="response", messages=messages, max_tokens=60, temperature=0)

    def stream(self, session: str, question: str) -> None:
        self.tally.add("gateway_calls")
        try:
            stream = self.client.chat.completions.create(
                model="response",
                messages=[{"role": "user", "content": question}],
                max_tokens=80,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Session-Id": session},
            )
            pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        except openai.APIError as exc:
            self._failed(exc)
            return
        self.tally.add("gateway_ok")
        if "".join(pieces):
            self.tally.add("gateway_streamed")

    def tool(self, session: str, order: str, proposal: dict) -> None:
        messages = [{"role": "user", "content": f"Please sort out order {order} and let the customer know."}]
        self._create(
            "tool",
            session,
            model="response",
            messages=messages,
            max_tokens=120,
            tools=TOOLS,
            extra_body={"mock_tool_calls": [proposal]},
        )

    def report(self, session: str, topic: str) -> None:
        messages = [{"role": "user", "content": f"Write a one-page summary of {topic} for the team lead."}]
        # The mock writes ~350 words: a dollar-heavy call on the large model.
        self._create(
            "report",
            session,
            model=LARGE_MODEL,
            messages=messages,
            max_tokens=500,
            extra_body={"mock_words": 350},
            operation="report",
        )

    def _create(self, kind: str, session: str, *, operation: str | None = None, **request) -> None:
        self.tally.add("gateway_calls")
        headers = {"X-Session-Id": session, **({"X-Operation": operation} if operation else {})}
        try:
            raw = self.client.chat.completions.with_raw_response.create(extra_headers=headers, **request)
            answer = raw.parse()
        except openai.APIError as exc:
            self._failed(exc)
            return
        self.tally.add("gateway_ok")
        if raw.headers.get("x-agentops-cache") == "hit":
            self.tally.add("gateway_cache_hits")
        elif raw.headers.get("x-agentops-handler", "primary") != "primary":
            self.tally.add("gateway_fallbacks")  # the backup model (or the rules) answered
        escalations = [e for e in raw.headers.get("x-agentops-escalations", "").split(",") if e.strip()]
        if escalations:
            self.tally.add("gateway_tool_escalations", len(escalations))
        elif kind == "tool" and answer.choices and answer.choices[0].message.tool_calls:
            self.tally.add("gateway_tool_calls_passed")

    def _failed(self, exc: Exception) -> None:
        status = getattr(exc, "status_code", None)
        code = getattr(exc, "code", None)
        if status == 429 and code == "insufficient_quota":
            self.tally.add("gateway_budget_refused")
            self.thrifty_until = time.monotonic() + QUOTA_PAUSE_SECONDS
        elif status == 429:
            self.tally.add("gateway_rate_limited")
        else:
            self.tally.add("gateway_errors")


# --- REST agents asking permission ------------------------------------------------------------------------


def _action(operation: str, arguments: dict, confidence: float, value: float | None = None) -> dict:
    return {"operation": operation, "arguments": arguments, "confidence": confidence, "value": value}


def refund_action(rng: random.Random, opening: bool) -> dict:
    """A support agent's risky action: a large refund (high value), an email (sensitive), a hasty refund
    (low confidence), or a small routine one (approved at once). The opening one is a large refund."""
    draw = 0.0 if opening else rng.random()
    if draw < 0.3:
        amount = round(rng.uniform(1100, 4000), 2)
        return _action("issue_refund", {"order_id": f"B2B-{rng.randint(1000, 9999)}", "amount": amount}, 0.9, amount)
    if draw < 0.5:
        return _action("send_email", {"to": "customer@example.com", "template": "refund_done"}, 0.95)
    amount = round(rng.uniform(20, 400) if draw < 0.65 else rng.uniform(5, 150), 2)
    confidence = 0.55 if draw < 0.65 else 0.93
    return _action("issue_refund", {"order_id": f"A-{rng.randint(10000, 99999)}", "amount": amount}, confidence, amount)


def research_action(rng: random.Random, opening: bool) -> dict:
    """A research agent's risky action: publishing a report it is unsure of (the opening one), deleting
    stale sources (sensitive), or publishing a report it is sure of (approved at once)."""
    draw = 0.0 if opening else rng.random()
    if draw < 0.4:
        return _action(
            "publish_report", {"channel": "#research", "title": "Weekly digest"}, round(rng.uniform(0.45, 0.68), 2)
        )
    if draw < 0.6:
        return _action("delete_stale_sources", {"older_than_days": rng.choice((30, 90, 365))}, 0.9)
    return _action("publish_report", {"channel": "#research", "title": "Topic brief"}, 0.92)


ACTIONS = {"support-refund": refund_action, "research": research_action}


class PermissionAsker:
    """Asks permission (POST /api/v1/actions) for an agent and waits for the decision before acting."""

    def __init__(self, clients: dict[str, AgentOps], *, token: str, seed: int | None, tally: Tally, stop):
        self.clients, self.token, self.tally, self.stop = clients, token, tally, stop
        self.rng = random.Random(None if seed is None else seed + 1)
        self._asked: Counter = Counter()
        self._lock = threading.Lock()

    def next_request(self, agent: str, index: int) -> Callable[[], None] | None:
        choose = ACTIONS.get(agent)
        if choose is None or agent not in self.clients:
            return None
        with self._lock:
            self._asked[agent] += 1
            action = choose(self.rng, opening=self._asked[agent] == 1)
        session = f"sim-{self.token}-{index % 25:02d}"
        return lambda: self.ask(agent, session, action)

    def ask(self, agent: str, session: str, action: dict) -> None:
        client = self.clients[agent]
        self.tally.add("actions_asked")
        try:
            decision = client.request_action(
                action["operation"],
                action["arguments"],
                session_id=session,
                value=action.get("value"),
                confidence=action.get("confidence"),
                context={"agent_analysis": "simulated agent (manage.py simulate_traffic)"},
            )
            if not decision.pending:
                self.tally.add("actions_approved_at_once")
                return
            self.tally.add("actions_escalated")
            while decision.pending and not self.stop.is_set():
                decision = client.get_action(decision.id, wait=3)  # short polls: the command can stop soon
        except (ApiError, httpx.HTTPError):
            self.tally.add("actions_errors")
            return
        if not decision.pending:
            self.tally.add(f"actions_{'rejected' if decision.status in ('rejected', 'expired') else 'allowed'}")


# --- outages ----------------------------------------------------------------------------------------------


class Outages:
    """Every ``every`` seconds (the first after ``first``), one model of each mock answers only 503 for
    ``length`` seconds. That is long enough for a single call's retries (the seed: 4 retries, back-off from
    2 s doubling) to fail five times in a row, which opens the model's circuit breaker (the seed's threshold)
    even when little traffic uses the model; the backups answer meanwhile, and a probe closes the breaker
    after its recovery timeout."""

    def __init__(self, roots: Iterable[str], models: Iterable[str], post, say, *, first=15.0, length=40.0, every=120.0):
        self.roots, self.models = list(roots), itertools.cycle(list(models))
        self.post, self.say = post, say
        self.first, self.length, self.every = first, length, every
        self.began = time.monotonic()
        self.current: str | None = None
        self.ends_at = 0.0
        self.next_at = self.began + first
        self.count = 0

    def tick(self, now: float) -> None:
        if self.current is not None and now >= self.ends_at:
            self.end()
        if self.current is None and now >= self.next_at and self.roots:
            model = next(self.models)
            for root in self.roots:
                self.post(root + "/_mock/rates", {"model": model, "rates": {"503": 1.0}, "seed": 0})
            self.current, self.ends_at, self.next_at = model, now + self.length, now + self.every
            self.count += 1
            self.say(f"outage: {model} answers only 503 for {self.length:g} s (its breaker should open)")

    def end(self) -> None:
        if self.current is None:
            return
        for root in self.roots:
            self.post(root + "/_mock/rates", {"model": self.current, "rates": {}, "seed": 0})
        self.say(f"outage: {self.current} is back")
        self.current = None
