"""Shared fixtures and helpers for the budget tests (real PostgreSQL; committed rows so that child processes
and Celery workers see them).

- ``budget_db``: a transactional test database with the seed's model prices and no budgets (the flush
  between transactional tests removes the data migration's rows; each test creates the budgets it needs,
  with ``tests.fixtures.factories.make_budget``);
- ``counter_of`` / ``counters_of`` / ``ledger`` / ``assert_balanced``: read counters and the usage ledger;
- ``child_env``: the environment a subprocess needs to reach the test database and the test Redis;
- ``receiver`` / ``Receiver`` / ``delivery_in``: a loopback webhook receiver, and a predicate for
  ``wait_for`` on a delivery's outcome.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db.models import Sum

from budgets.actions import directory
from budgets.models import Alert, Budget, BudgetCounter, Reservation, UsageRecord, Webhook, WebhookDelivery
from tests.fixtures.factories import seed_prices
from tests.fixtures.runtime import free_port


@pytest.fixture
def budget_db(transactional_db, redis_client):
    """Committed rows (other processes see them), the seed prices and no budgets."""
    Budget.objects.all().delete()
    directory.directory_changed()
    seed_prices()


@pytest.fixture
def child_env(stack_env) -> dict:
    """Subprocess environment: the pytest-django test database, the test Redis, quiet logs."""
    return {**stack_env, "LOG_LEVEL": "WARNING"}


def counters_of(budget: Budget) -> list[BudgetCounter]:
    return list(BudgetCounter.objects.filter(budget=budget).order_by("period_start", "subject"))


def counter_of(budget: Budget, subject: str = "") -> BudgetCounter:
    return BudgetCounter.objects.get(budget=budget, subject=subject)


def ledger(**filters) -> dict:
    """Sums over the usage ledger rows matching ``filters``."""
    totals = UsageRecord.objects.filter(**filters).aggregate(
        input=Sum("input_tokens"), output=Sum("output_tokens"), usd=Sum("cost_usd")
    )
    return {
        "tokens": (totals["input"] or 0) + (totals["output"] or 0),
        "usd": totals["usd"] or Decimal(0),
        "rows": UsageRecord.objects.filter(**filters).count(),
    }


def assert_balanced(counter: BudgetCounter, **ledger_filters) -> None:
    """Nothing held any more, and the counter's spend is exactly its ledger rows."""
    counter.refresh_from_db()
    assert (counter.reserved_tokens, counter.reserved_usd, counter.in_flight) == (0, 0, 0), counter
    expected = ledger(**ledger_filters)
    assert (counter.spent_tokens, counter.spent_usd) == (expected["tokens"], expected["usd"]), (counter, expected)


def held_reservations() -> int:
    return Reservation.objects.filter(status=Reservation.Status.HELD).count()


# --- webhook receivers -----------------------------------------------------------------------------
class Receiver:
    """A webhook receiver: answers each path from a script of status codes (the last one repeats) and
    records every request body."""

    def __init__(self, host: str = "127.0.0.1"):
        self.lock = threading.Lock()
        self.scripts: dict[str, list[int]] = {}
        self.bodies: dict[str, list[dict]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                with receiver.lock:
                    receiver.bodies.setdefault(self.path, []).append(body)
                    script = receiver.scripts.get(self.path, [200])
                    status = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"receiver is having a bad day")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, free_port()), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def path(self, statuses: list[int]) -> str:
        """A fresh path answering with ``statuses``; returns its full URL."""
        path = f"/hook/{uuid.uuid4().hex[:10]}"
        with self.lock:
            self.scripts[path] = list(statuses)
        return self.url + path

    def received(self, url: str) -> list[dict]:
        with self.lock:
            return list(self.bodies.get(url.removeprefix(self.url), []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on the allowed loopback address 127.0.0.1."""
    server = Receiver()
    yield server
    server.close()


def delivery_in(alert: Alert, webhook: Webhook, *statuses: str) -> Callable[[], WebhookDelivery | None]:
    """A predicate for wait_for: the alert's delivery to the webhook once its status is one of ``statuses``."""

    def reached() -> WebhookDelivery | None:
        return WebhookDelivery.objects.filter(alert=alert, webhook=webhook, status__in=statuses).first()

    def describe() -> str:
        delivery = WebhookDelivery.objects.filter(alert=alert, webhook=webhook).first()
        return f"the delivery to be {'/'.join(statuses)}: it is {delivery.status if delivery else 'missing'}"

    reached.describe = describe
    return reached
