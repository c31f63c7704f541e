"""What the demo traffic sends and does (manage.py simulate_traffic): run inputs that hit every path of the
demo agents, the simulated reviewer's decisions, and the fault mix that makes providers fail now and then."""

from __future__ import annotations

import random
from collections import Counter
from urllib.parse import urlparse

import httpx

from agentops.config import actions as config_actions
from agentops.config.models import ModelRoute, Provider, RuntimeSettings
from agentops.demo.agents.tools import order_book
from agentops.demo.traffic import Outages

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
