"""Chromium: after 10 wrong passwords the sign-in page answers 429 with a page that says when to retry
(issue 14, item 10), and the right password does not get through before then."""

from __future__ import annotations

import pytest

from tests.fixtures.browser import screenshot
from tests.fixtures.people import PASSWORD


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_lockout_page_says_when_to_retry(web, page, alice):
    statuses = []
    for number in range(11):
        page.goto(web.extra["url"] + "/accounts/login/")
        if page.locator("#id_username").count() == 0:  # already the lockout page
            break
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD if number == 10 else f"wrong-{number}")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("main button[type=submit]")
        statuses.append(answer.value.status)
    assert statuses[:9] == [200] * 9 and 429 in statuses, statuses
    heading = page.locator("main h1")
    assert heading.inner_text() == "Too many sign-in attempts"
    assert "Try again in 15 minutes, at " in page.locator("main").inner_text()
    assert page.locator("header .who span").count() == 0  # nobody is signed in
    screenshot(page, "login-locked-out")
    # Chromium reports the 429 document itself as a failed load; anything else would be a page error
    assert [e for e in page.console_errors if "status of 429" not in e] == []
