"""Test-wide setup. `make test` points DATABASE_URL / REDIS_URL at the test profile's services.

The shared fixtures are plugins in tests/fixtures/: the cast of people and agents (people), the object
builders (factories), the one wait (waiting, imported where used), the runtime's doubles and services
(runtime), a real SMTP server (smtp), the real stack as subprocesses (stack) and Chromium (browser).
pytest-django has set Django up before this file is imported, so it and the plugins import models at the top.
"""

import os
import time

import pytest
from django.conf import settings
from django.contrib.auth import hashers
from django.db import DatabaseError, connections
from django.test.testcases import TransactionTestCase

from budgets.actions.directory import directory_changed
from tests.fixtures import agents_venv

# Playwright's sync API keeps an event loop in the main thread; Django would refuse ORM calls there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# In the order they import each other (a plugin imported by an earlier one would miss assert rewriting).
pytest_plugins = [
    "tests.fixtures.runtime",
    "tests.fixtures.people",
    "tests.fixtures.factories",
    "tests.fixtures.smtp",
    "tests.fixtures.stack",
    "tests.fixtures.slack",
    "tests.fixtures.browser",
]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests run last. Playwright's sync API keeps an event loop running in the main thread
    for the rest of the session, after which asyncio.run() and async_to_sync() refuse to work."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    if any("agents_python" in getattr(item, "fixturenames", ()) for item in items):
        agents_venv.start_building()  # overlaps the tests before the compatibility tests (fresh machines)


# Rows the flush keeps: post_migrate would only write the same rows again (contenttypes and auth are the only
# apps with a post_migrate receiver), with new ids each time.
KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})


def _fast_flush(using: str) -> None:
    """Empty every model table, as Django's `flush` does, for a fraction of its cost: TRUNCATE only the tables
    that hold rows (one query finds them; TRUNCATE costs a new file per table and index, ~40 tables), and keep
    the content types and permissions instead of deleting them and emitting post_migrate to create them again
    (~200 ms a test). Until a look finds every table empty: a row the stack's processes commit between the
    look and the TRUNCATE is caught by the next look."""
    connection = connections[using]
    quote = connection.ops.quote_name
    tables = [
        table
        for table in connection.introspection.django_table_names(only_existing=True, include_views=False)
        if table not in KEPT_BY_FLUSH
    ]
    look = " UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT 1 FROM {quote(table)})" for table in tables)
    with connection.cursor() as cursor:
        for _ in range(10):
            cursor.execute(look, tables)
            holding = [row[0] for row in cursor.fetchall()]
            if not holding:
                return
            # CASCADE: a table referencing one that holds rows is emptied too (it is in the list or empty).
            cursor.execute(f"TRUNCATE {', '.join(quote(table) for table in holding)} CASCADE")
    raise RuntimeError(f"tables still hold rows after 10 flushes: {holding}")


def _flush_retrying_on_deadlock() -> None:
    """A transactional test's teardown empties every table while the live server and the session's Celery
    worker may still be finishing work the test started (a queued run picked up late). PostgreSQL then
    resolves the lock cycle by cancelling one side; when the flush is the victim, retrying it is correct —
    the other side's transaction has finished by then."""

    def teardown(self):
        for attempt in range(5):
            try:
                for using in self._databases_names(include_mirrors=False):
                    _fast_flush(using)
                _forget_budget_directory()
                return
            except DatabaseError as exc:
                if "deadlock" not in repr(exc).lower() or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown


def _forget_budget_directory() -> None:
    """The flush removed budgets behind budgets.actions' back: no process may reuse its cached directory."""
    directory_changed()


_flush_retrying_on_deadlock()


def _quick_password_hashing() -> None:
    """The cast's passwords hashed with tests.fixtures.people.QuickPBKDF2 in this process (tests that set
    PASSWORD_HASHERS themselves still do)."""
    settings.PASSWORD_HASHERS = [
        "tests.fixtures.people.QuickPBKDF2",
        *(name for name in settings.PASSWORD_HASHERS if name != "django.contrib.auth.hashers.PBKDF2PasswordHasher"),
    ]
    hashers.get_hashers.cache_clear()
    hashers.get_hashers_by_algorithm.cache_clear()


_quick_password_hashing()
