"""Test-wide setup. `make test` points DATABASE_URL / REDIS_URL at the test profile's services."""

import os

# Playwright's sync API keeps an event loop in the main thread; Django would refuse ORM calls there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytest_plugins = ["tests.fixtures.runtime", "tests.fixtures.stack", "tests.fixtures.browser"]
