"""Chromium signs in as each role and sees the navigation for that role only."""

from __future__ import annotations

import pytest

from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE, ROOT


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_reviewer_sees_only_reviewer_sections(web, page, alice):
    login(page, web.extra["url"], ALICE)
    nav = page.locator("header nav a").all_inner_texts()
    assert "Ops" not in nav and "Budgets" not in nav and "Costs" not in nav and "Admin" not in nav
    assert set(nav) <= {"Queue", "Runs"}
    assert page.locator("header .who span").inner_text() == "alice"
    screenshot(page, "login-reviewer-nav")
    assert page.console_errors == []
    # a section outside the role is refused, not just hidden
    response = page.goto(web.extra["url"] + "/ops/")
    assert response.status == 403


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_sees_ops_with_live_dependency_status(web, worker, page, root):
    login(page, web.extra["url"], ROOT)
    page.goto(web.extra["url"] + "/ops/")
    nav = page.locator("header nav a").all_inner_texts()
    assert "Ops" in nav and "Admin" in nav
    assert page.locator("#ops-status td", has_text="database").count() == 1
    assert page.locator("#ops-status .badge.bad").count() == 0
    page.wait_for_selector("#ops-status .mono", timeout=5000)
    screenshot(page, "ops-page")
    assert page.console_errors == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_wrong_password_shows_a_form_error_and_keeps_the_username(web, page, bea):
    page.goto(web.extra["url"] + "/accounts/login/")
    page.fill("#id_username", "bea")
    page.fill("#id_password", "wrong-password")
    page.click("main button[type=submit]")
    assert page.locator(".form-error").is_visible()
    assert page.input_value("#id_username") == "bea"
    screenshot(page, "login-error")
