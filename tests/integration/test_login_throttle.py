"""Sign-in throttling (issue 14, item 10; agentops/accounts/login_throttle.py) through the real uvicorn server.

10 failed sign-ins for one username (from any address), or from one client address (for any usernames),
lock it out: the next attempt — even with the right password — answers 429 with a page saying when to retry,
on /accounts/login/ and /admin/login/ alike, and on every web process (the counts are in PostgreSQL).

Client addresses are told apart the way the server sees them (REMOTE_ADDR, no proxy): each test client
connects from its own loopback address (127.0.0.x).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from axes.models import AccessAttempt, AccessFailureLog

from tests.fixtures.people import PASSWORD, ROOT
from tests.fixtures.stack import Proc, start_web

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 10
LOGIN, ADMIN_LOGIN = "/accounts/login/", "/admin/login/"


@pytest.fixture
def base_url(web, transactional_db) -> str:
    return web.extra["url"]


def browser(base_url: str, address: str) -> httpx.Client:
    """A cookie-keeping client whose connections come from `address`."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base_url, transport=transport, timeout=30, follow_redirects=False)


def attempt(client: httpx.Client, username: str, password: str, path: str = LOGIN) -> httpx.Response:
    page = client.get(path)
    assert page.status_code in (200, 429), page.text[-300:]
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]*)"', page.text)
    token = match.group(1) if match else client.cookies.get("csrftoken", "")
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    if path == ADMIN_LOGIN:
        data["next"] = "/admin/"
    return client.post(path, data=data, headers={"Referer": str(client.base_url) + path})


def assert_locked(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text[-500:])
    assert "Too many sign-in attempts" in response.text
    assert "Try again in 15 minutes, at " in response.text
    assert response.headers["Retry-After"] == "900"
    assert "sessionid" not in response.cookies


def fail(client: httpx.Client, username: str, times: int, path: str = LOGIN) -> None:
    for number in range(times):
        answer = attempt(client, username, "wrong-password-" + str(number), path)
        assert answer.status_code == 200, (number, answer.status_code, answer.text[-300:])  # the form again


@pytest.fixture
def second_web(stack_env, logdir) -> Iterator[Proc]:
    proc = start_web(stack_env, logdir)
    yield proc
    proc.stop()


def test_ten_wrong_passwords_lock_the_username_everywhere(base_url, second_web, web, alice, bob):
    logged_before = web.log.stat().st_size
    attacker = browser(base_url, "127.0.0.2")
    fail(attacker, "alice", LIMIT - 1)
    # the 10th failure, on the admin's sign-in (counted the same), is answered with the lockout
    assert_locked(attempt(attacker, "alice", "wrong-password", ADMIN_LOGIN))

    assert_locked(attempt(attacker, "alice", PASSWORD))  # the right password, too late
    assert_locked(attempt(attacker, "alice", PASSWORD, ADMIN_LOGIN))
    # the real alice, from another address: her name is locked (per username)...
    alices_browser = browser(base_url, "127.0.0.3")
    assert_locked(attempt(alices_browser, "alice", PASSWORD))
    # ... on the other web process too: the count lives in PostgreSQL
    assert_locked(attempt(browser(second_web.extra["url"], "127.0.0.3"), "alice", PASSWORD))
    # another user from that address is not affected
    assert attempt(browser(base_url, "127.0.0.3"), "bob", PASSWORD).status_code == 302

    # audit: axes' rows (listed in the admin) and one structured log line per refused attempt
    assert AccessAttempt.objects.filter(username="alice").count() >= 1
    assert AccessFailureLog.objects.filter(username="alice").count() >= LIMIT
    admin = browser(base_url, "127.0.0.9")
    ROOT.user()
    assert attempt(admin, "root", PASSWORD, ADMIN_LOGIN).status_code == 302
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "alice" in listing.text
    with web.log.open("rb") as log:
        log.seek(logged_before)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if "auth.login_locked_out" in line]
    assert lines and all("alice" in line and "127.0.0." in line for line in lines), lines


def test_ten_failures_from_one_address_lock_it_for_every_username(base_url, alice):
    sprayer = browser(base_url, "127.0.0.4")
    for number in range(LIMIT - 1):
        path = LOGIN if number % 2 else ADMIN_LOGIN
        assert attempt(sprayer, f"throttle-nobody-{number}", "wrong-password", path).status_code == 200
    assert_locked(attempt(sprayer, "throttle-nobody-last", "wrong-password"))

    assert_locked(attempt(sprayer, "alice", PASSWORD))  # a real user from that address: locked
    assert attempt(browser(base_url, "127.0.0.5"), "alice", PASSWORD).status_code == 302  # elsewhere: in


def test_a_success_forgives_only_its_own_failures(base_url, alice, bob):
    """Signing in to one's own account must not clear what an address did against other accounts (axes'
    default reset on success would: one valid account would buy unlimited guesses)."""
    bobs_browser = browser(base_url, "127.0.0.6")
    fail(bobs_browser, "bob", 2)  # his own typos ...
    fail(bobs_browser, "alice", LIMIT - 3)  # ... and guesses at alice's account
    assert attempt(bobs_browser, "bob", PASSWORD).status_code == 302  # forgives his own 2 typos only
    fail(browser(base_url, "127.0.0.6"), "alice", 2)  # 7 + 2 = 9 failures on record for the address
    assert_locked(attempt(browser(base_url, "127.0.0.6"), "alice", "wrong"))  # the 10th
    assert_locked(attempt(browser(base_url, "127.0.0.6"), "bob", PASSWORD))


def test_the_test_client_login_is_not_throttled(client, alice):
    """Sign-ins without an HTTP request (the test client's login(), a shell) have no address to count."""
    for _ in range(LIMIT + 2):
        assert not client.login(username="alice", password="wrong")
    assert client.login(username="alice", password=PASSWORD)
