"""Test-wide setup. `make test` points DATABASE_URL / REDIS_URL at the test profile's services.

The shared fixtures are plugins in tests/fixtures/: the cast of people and agents (people), the object
builders (factories), the one wait (waiting, imported where used), the runtime's doubles and services
(runtime), the real stack as subprocesses (stack) and Chromium (browser). pytest-django has set Django up
before this file is imported, so it and the plugins import models at the top.
"""

import os
import time

import pytest
from django.core.management.base import CommandError
from django.test.testcases import TransactionTestCase

from budgets.actions.directory import directory_changed

# Playwright's sync API keeps an event loop in the main thread; Django would refuse ORM calls there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# In the order they import each other (a plugin imported by an earlier one would miss assert rewriting).
pytest_plugins = [
    "tests.fixtures.runtime",
    "tests.fixtures.people",
    "tests.fixtures.factories",
    "tests.fixtures.stack",
    "tests.fixtures.browser",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests run last. Playwright's sync API keeps an event loop running in the main thread
    for the rest of the session, after which asyncio.run() and async_to_sync() refuse to work."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def _flush_retrying_on_deadlock() -> None:
    """A transactional test's teardown TRUNCATEs every table while the live server and the session's
    Celery worker may still be finishing work the test started (a queued run picked up late). PostgreSQL
    then resolves the lock cycle by cancelling one side; when the flush is the victim, retrying it is
    correct — the other side's transaction has finished by then."""
    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(5):
            try:
                original(self)
                _forget_budget_directory()
                return
            except CommandError as exc:
                if "deadlock" not in repr(exc.__cause__ or exc).lower() or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown


def _forget_budget_directory() -> None:
    """The flush removed budgets behind budgets.actions' back: no process may reuse its cached directory."""
    directory_changed()


_flush_retrying_on_deadlock()
