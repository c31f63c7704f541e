"""Test-wide setup. `make test` points DATABASE_URL / REDIS_URL at the test profile's services."""

import os

# Playwright's sync API keeps an event loop in the main thread; Django would refuse ORM calls there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytest_plugins = ["tests.fixtures.runtime", "tests.fixtures.stack", "tests.fixtures.browser"]


import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests run last. Playwright's sync API keeps an event loop running in the main thread
    for the rest of the session, after which asyncio.run() and async_to_sync() refuse to work."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
