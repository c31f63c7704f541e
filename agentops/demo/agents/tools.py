"""Tools the demo agents call: a fake order book, refunds and emails with exactly-once effects, and a
fake web search.

Everything is deterministic (derived from the arguments with a hash), so a replayed or re-executed
step sees the same world, and nothing leaves the machine: the side-effecting tools record their effect
as a `ToolEffect` row keyed by the step's idempotency key (`run:<id>:step:<seq>`) instead of moving
money or sending mail. A step re-executed after a crash finds its effect already recorded and reports
the same refund / message id instead of doing it twice.

Order ids shape the fake order book:
- `A-<digits>`    consumer orders, $9.99 – $429.99;
- `B2B-<digits>`  business orders, $1,150 – $9,800 (a full refund is a high-value decision, > $1,000);
- `ARCH-<digits>` orders in the archive: the lookup takes `ARCHIVE_LATENCY` seconds, longer than the
  tool_search phase allows, so the optional phase is skipped;
- anything else is not found.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from agentops.runs.actions import journal
from agentops.runtime.context import tool

ARCHIVE_LATENCY = 12.0  # seconds; the tool_search phase allows 10
SEARCH_LATENCY = 0.05  # seconds per fake web search (a cache hit skips it)

ORDER_ID = re.compile(r"^(A|B2B|ARCH)-\d{3,8}$", re.IGNORECASE)
FIRST_NAMES = ("ana", "ben", "chen", "dara", "emil", "farah", "gus", "hana", "ivan", "jo", "kemal", "lena")
LAST_NAMES = ("silva", "okafor", "novak", "tanaka", "meyer", "haddad", "berg", "costa", "ward", "kim")
PRODUCTS = (
    "noise-cancelling headphones",
    "espresso machine",
    "standing desk",
    "4K monitor",
    "trail running shoes",
    "robot vacuum",
    "mechanical keyboard",
    "air purifier",
    "office chair",
    "smartwatch",
)
B2B_PRODUCTS = ("fleet of 12 laptops", "conference room AV kit", "warehouse scanner bundle", "annual software licence")
# Weighted: most orders were delivered; some are still on their way; a few were already refunded.
STATUSES = ("delivered",) * 6 + ("shipped",) * 2 + ("in_transit", "refunded")


def _number(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{text}".encode()).digest()[:8], "big")


def order_book(order_id: str) -> dict[str, Any]:
    """The fake order behind an id (pure: the same id always gives the same order)."""
    order_id = str(order_id).strip().upper()
    match = ORDER_ID.match(order_id)
    if match is None:
        return {"found": False, "order_id": order_id}
    kind = match.group(1)
    n = _number(order_id)
    first, last = FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[(n // 13) % len(LAST_NAMES)]
    if kind == "B2B":
        total = 1150 + (n // 7) % 865_000 / 100  # $1,150.00 – $9,799.99
        product = B2B_PRODUCTS[(n // 17) % len(B2B_PRODUCTS)]
        email = f"{first}.{last}@{last}-industries.example"
    else:
        total = 9.99 + (n // 7) % 42_000 / 100  # $9.99 – $429.98
        product = PRODUCTS[(n // 17) % len(PRODUCTS)]
        email = f"{first}.{last}@example.com"
    return {
        "found": True,
        "order_id": order_id,
        "customer": f"{first.title()} {last.title()}",
        "email": email,
        "product": product,
        "total": round(total, 2),
        "currency": "USD",
        "status": STATUSES[(n // 29) % len(STATUSES)],
        "archived": kind == "ARCH",
    }


@tool("lookup_order", description="Look up an order by id: customer, email, product, total, status.")
def lookup_order(args, idempotency_key=None):
    order = order_book(args.get("order_id", ""))
    if order.get("archived"):
        time.sleep(ARCHIVE_LATENCY)  # the cold archive is slow
    return order


PROFILE_LATENCY = 0.05  # seconds per fake CRM read (a user_profiles cache hit skips it)
TIERS = ("standard",) * 6 + ("silver",) * 3 + ("gold",)


def customer_profile(email: str) -> dict[str, Any]:
    """The fake CRM's profile of a customer (pure apart from its latency: the same email, the same profile).
    Agents load it through ``ctx.cache("user_profiles", email, ...)``: 24 h in the cache, so a returning
    customer's profile is not read again."""
    email = str(email).strip().lower()
    time.sleep(PROFILE_LATENCY)
    n = _number(email, salt="profile")
    return {
        "email": email,
        "tier": TIERS[n % len(TIERS)],
        "customer_since": 2015 + n % 10,
        "orders_last_year": n % 23,
        "language": ("en", "en", "en", "de", "fr", "es")[(n // 7) % 6],
    }


def _record(tool_name: str, idempotency_key: str | None, payload: dict) -> tuple[int, bool]:
    """Record the effect once per idempotency key; (effect id, whether this call created it)."""
    if not idempotency_key:
        raise ValueError(f"{tool_name} has side effects and needs an idempotency key")
    effect, created = journal.record_effect(idempotency_key, tool_name, payload)
    return effect.pk, created


@tool("issue_refund", side_effect=True, description="Refund an amount of an order to the customer's card.")
def issue_refund(args, idempotency_key=None):
    amount = round(float(args["amount"]), 2)
    if amount <= 0:
        raise ValueError(f"a refund must be positive, not {amount}")
    payload = {"order_id": args["order_id"], "amount": amount, "currency": args.get("currency", "USD")}
    payload["reason"] = str(args.get("reason", ""))[:200]
    effect_id, created = _record("issue_refund", idempotency_key, payload)
    return {
        "refund_id": f"rf_{effect_id:06d}",
        "order_id": payload["order_id"],
        "amount": amount,
        "currency": payload["currency"],
        "status": "issued",
        "first_time": created,
    }


@tool("send_email", side_effect=True, description="Send an email to a customer.")
def send_email(args, idempotency_key=None):
    payload = {"to": args["to"], "subject": args.get("subject", ""), "body": args.get("body", "")}
    effect_id, created = _record("send_email", idempotency_key, payload)
    return {"message_id": f"<msg-{effect_id:06d}@support.example>", "to": payload["to"], "first_time": created}


SOURCES = (
    ("arxiv.org", "paper"),
    ("nature.com", "article"),
    ("acm.org", "survey"),
    ("ieee.org", "paper"),
    ("github.com", "repository"),
    ("wikipedia.org", "encyclopedia entry"),
    ("hbr.org", "case study"),
    ("nist.gov", "report"),
)


@tool("web_search", cacheable=True, description="Search the web; returns titles, URLs and snippets.")
def web_search(args, idempotency_key=None):
    query = " ".join(str(args.get("query", "")).split())
    limit = max(1, min(int(args.get("limit", 3)), 8))
    time.sleep(SEARCH_LATENCY)
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "search"
    results = []
    for rank in range(limit):
        n = _number(query, salt=str(rank))
        domain, kind = SOURCES[n % len(SOURCES)]
        year = 2019 + n % 7
        results.append(
            {
                "rank": rank + 1,
                "title": f"{query.title()}: a {year} {kind}",
                "url": f"https://{domain}/{slug}/{n % 100_000:05d}",
                "snippet": f"A {kind} from {year} on {query}, covering methods, results and open questions "
                f"(source {rank + 1} of {limit}).",
            }
        )
    return {"query": query, "results": results}
