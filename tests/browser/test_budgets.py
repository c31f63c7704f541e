"""Chromium: a budget admin creates a budget through the form (an error first, then fixed) and watches its
utilization bar move live; the cost dashboard draws its charts from /costs/data.json under the strict
CSP (no console errors); an alert fired in this process appears on the alerts page without a reload."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from budgets.actions import alerts, ledger, rollups
from budgets.actions import budgets as budget_actions
from budgets.actions import counters as counter_actions
from budgets.models import Alert, Budget
from tests.fixtures.browser import login, screenshot
from tests.fixtures.factories import seed_prices
from tests.fixtures.people import BEA

FORM_REFUSAL = re.compile(r"status of 422")  # the form page answers 422 with the errors (expected)


def console_errors(page) -> list[str]:
    return [e for e in page.console_errors if not FORM_REFUSAL.search(e)]


@pytest.fixture
def budget_admin(transactional_db, redis_client, bea):
    """Bea, the cast's budget admin, with the seed prices and no budgets."""
    Budget.objects.all().delete()
    seed_prices()
    # other processes' throttle does not matter; ours must not swallow the first "budgets changed" signal
    counter_actions._LAST_PUBLISH[0] = 0.0
    return BEA


def canvas_has_pixels(page, canvas_id: str) -> bool:
    return page.evaluate(
        """(id) => {
            const c = document.getElementById(id);
            if (!c || !c.width || !c.height) return false;
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4) { if (d[i] !== 0) return true; }
            return false;
        }""",
        canvas_id,
    )


@pytest.mark.browser
def test_budget_admin_creates_a_budget_and_sees_its_utilization_bar(web, page, budget_admin):
    base = web.extra["url"]
    login(page, base, budget_admin)
    page.goto(f"{base}/budgets/new/")
    page.fill("#id_name", "Browser daily")
    page.select_option("#id_scope", "global")
    page.select_option("#id_period", "day")
    page.fill("#id_timezone", "Mars/Olympus_Mons")
    page.fill("#id_limit_tokens", "10000")
    page.fill("#id_operation_limits", "planning=1000, response=lots")
    page.click("button[type=submit].primary")
    expect(page.locator("#id_timezone_error")).to_contain_text("is not a time zone name")
    expect(page.locator("#id_operation_limits_error")).to_contain_text("whole number")
    # nothing typed was lost
    expect(page.locator("#id_name")).to_have_value("Browser daily")
    expect(page.locator("#id_limit_tokens")).to_have_value("10000")
    page.fill("#id_timezone", "Europe/Berlin")
    page.fill("#id_operation_limits", "planning=1000, response=1500")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/budgets/")
    budget = Budget.objects.get(name="Browser daily")
    assert budget.operation_limits == {"planning": 1000, "response": 1500}
    card = page.locator(f"[data-budget='{budget.pk}']")
    expect(card).to_contain_text("Europe/Berlin")
    expect(card.locator(".ubar")).to_have_attribute("data-used-pct", "0")

    # spend moves the bar live (the page re-reads on the `budgets` group's signal)
    page.wait_for_selector("#budgets-socket[data-live='open']", state="attached", timeout=10_000)
    ledger.record_usage({"agent": "a", "model": "gpt-4o", "input_tokens": 3000, "output_tokens": 1000})
    expect(card.locator(".ubar")).to_have_attribute("data-used-pct", "40", timeout=10_000)
    expect(card).to_contain_text("4,000 spent")
    spent = card.locator(".seg.spent")
    assert spent.evaluate("el => el.getBoundingClientRect().width") > 0
    screenshot(page, "budgets-list")
    assert console_errors(page) == []


@pytest.mark.browser
def test_cost_dashboard_draws_its_charts(web, page, budget_admin):
    now = timezone.now()
    for days_ago, model, agent, operation, tokens in [
        (3, "gpt-4o", "research", "planning", 4000),
        (2, "gpt-4o-mini", "support", "response", 9000),
        (1, "gpt-4o", "support", "reflection", 2500),
        (1, "gpt-4o-mini", "research", "response", 6000),
    ]:
        ledger.record_usage(
            {
                "agent": agent,
                "session_id": f"sess-{agent}-{days_ago}",
                "model": model,
                "operation": operation,
                "input_tokens": tokens,
                "output_tokens": tokens // 4,
                "cached_tokens": tokens // 3,
            },
            now=now - dt.timedelta(days=days_ago),
        )
    rollups.roll_up_usage()
    budget_actions.save_budget(Budget(name="Today", timezone="Europe/Berlin", limit_tokens=20_000))
    ledger.record_usage({"agent": "research", "session_id": "live", "model": "gpt-4o", "input_tokens": 5000})
    # Answered under a dated name: priced by its family's row, and the screen says which row applied.
    ledger.record_usage({"agent": "support", "model": "gpt-4o-2024-08-06", "input_tokens": 100, "output_tokens": 10})

    base = web.extra["url"]
    login(page, base, budget_admin)
    page.goto(f"{base}/costs/")
    page.wait_for_selector("#costs-page[data-state='ready']", timeout=15_000)
    for canvas in ("chart-daily", "chart-agents", "chart-operations", "chart-tokens"):
        assert canvas_has_pixels(page, canvas), canvas
    datasets = page.evaluate("() => Chart.getChart('chart-daily').data.datasets.map(d => d.label)")
    assert set(datasets) == {"gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06"}
    expect(page.locator("#top-session-rows tr")).to_have_count(5)
    expect(page.locator("#forecast-list li[data-budget='Today']")).to_contain_text("Today")
    expect(page.locator("#total-calls")).to_have_text("6")
    dated = page.locator("#recent-call-rows tr").first
    expect(dated).to_contain_text("gpt-4o-2024-08-06")
    expect(dated.locator(".priced-as")).to_contain_text("gpt-4o from 2024-01-01")
    page.wait_for_timeout(300)  # let Chart.js finish its layout before the picture
    screenshot(page, "costs-dashboard")
    assert page.console_errors == [], page.console_errors


@pytest.mark.browser
def test_a_fired_alert_appears_live_on_the_alerts_page(web, page, budget_admin):
    base = web.extra["url"]
    login(page, base, budget_admin)
    page.goto(f"{base}/budgets/alerts/")
    page.wait_for_selector("#alerts-socket[data-live='open']", state="attached", timeout=10_000)
    expect(page.locator("#alerts-badge")).to_have_text("0")
    alert = alerts.fire_alert(
        Alert.Kind.SOFT_THRESHOLD,
        f"browser-test:{timezone.now().isoformat()}",
        'budget "Browser daily" passed 80% <img src=x onerror=alert(1)>',
        severity=Alert.Severity.WARNING,
    )
    row = page.locator(f"#open-alert-rows tr[data-alert='{alert.pk}']")
    expect(row).to_contain_text("passed 80% <img src=x onerror=alert(1)>", timeout=10_000)
    expect(page.locator("#alerts-badge")).to_have_text("1")
    row.locator("button.ack").click()
    expect(page.locator(f"#acknowledged-alerts tr[data-alert='{alert.pk}']")).to_contain_text("by bea")
    expect(page.locator("#alerts-badge")).to_have_text("0", timeout=10_000)
    screenshot(page, "budgets-alerts")
    assert page.console_errors == []
