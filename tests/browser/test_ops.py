"""Chromium: an operator probes the guard pipeline and forces a breaker open from the ops page, also one
whose model id holds a "/" (vLLM, OpenRouter)."""

from __future__ import annotations

import pytest

from agentops import wiring
from agentops.config.source import config_source
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ROOT
from tests.fixtures.stack import reseed_runtime


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_probes_and_forces_a_breaker_live(web, worker, page, redis_client, root):
    reseed_runtime()
    config_source().invalidate()
    slashed = wiring.breaker_registry().get("openrouter", "meta-llama/Llama-3-8B")  # its name is now in Redis
    login(page, web.extra["url"], ROOT)
    page.goto(web.extra["url"] + "/ops/")
    page.fill("#id_operation", "planning")
    page.fill("#id_prompt", "Plan a <b>bold</b> rollout")
    page.click("#probe-form button[type=submit]")
    page.wait_for_selector("#probe-result .badge.ok", timeout=20000)
    assert "gpt-4o" in page.inner_text("#probe-result")
    assert page.locator("#probe-result pre b").count() == 0  # echoed markup stays text
    # the probe created the breaker; the ops page learns it over the socket (or its 15 s poll)
    page.wait_for_selector("tr[data-breaker='simulated:gpt-4o']", timeout=20000)
    page.click("tr[data-breaker='simulated:gpt-4o'] button:has-text('Force open')")
    page.wait_for_selector("tr[data-breaker='simulated:gpt-4o'] .badge.bad", timeout=20000)
    screenshot(page, "ops-breaker-forced-open")
    page.click("tr[data-breaker='simulated:gpt-4o'] button:has-text('Reset')")
    page.wait_for_selector("tr[data-breaker='simulated:gpt-4o'] .badge.ok", timeout=20000)

    row = "tr[data-breaker='openrouter:meta-llama/Llama-3-8B']"
    page.click(f"{row} button:has-text('Force open')")
    page.wait_for_selector(f"{row} .badge.bad", timeout=20000)
    assert slashed.state().value == "open"
    page.click(f"{row} button:has-text('Reset')")
    page.wait_for_selector(f"{row} .badge.ok", timeout=20000)
    assert slashed.state().value == "closed"
    assert page.console_errors == []
