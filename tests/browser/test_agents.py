"""Chromium: an agent admin creates a key on the Agents screen (shown once, with a copy button), the key works
on /api/v1, is never shown again, and is revoked (then refused); then she edits the agent (an error first,
then fixed) and disables it, and its other key is refused with 403 — all under the strict CSP, no console
errors."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from agentops.keys import actions as key_actions
from agentops.keys.models import ApiKey
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Agent
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ADA
from tests.fixtures.waiting import wait_for

FORM_REFUSAL = re.compile(r"status of 422")  # a form answered 422 with its errors (expected)
KEY_RE = re.compile(r"^ao_[0-9a-f]{12}_[A-Za-z0-9_-]+$")
AGENT = "browser-agent"


def console_errors(page) -> list[str]:
    return [e for e in page.console_errors if not FORM_REFUSAL.search(e)]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_agent_admin_creates_a_key_sees_it_once_revokes_it_and_edits_the_agent(web, page, redis_client, ada):
    base = web.extra["url"]
    agent_actions.ensure_agent(AGENT, team="support")
    _, other_key = key_actions.create_api_key(AGENT, name="older")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    login(page, base, ADA)
    page.goto(f"{base}/")
    page.click("header nav a:has-text('Agents')")
    page.wait_for_url(f"{base}/agents/")
    expect(page.locator(f"tr[data-agent='{AGENT}']")).to_contain_text("support")
    page.click(f"tr[data-agent='{AGENT}'] a")
    page.wait_for_url(f"{base}/agents/{AGENT}/")

    # create a key (htmx: the keys section is swapped in place) — shown once, with a copy button
    page.fill("#id_new-name", "laptop")
    page.fill("#id_new-allowed_models", "gpt-4o-mini")
    page.fill("#id_new-rate_per_minute", "600")
    page.click("#new-key-form button[type=submit]")
    expect(page.locator("#new-key")).to_be_visible()
    key = page.inner_text("#new-key").strip()
    assert KEY_RE.match(key), key
    row = ApiKey.objects.get(name="laptop")
    assert key.startswith(f"ao_{row.prefix}_") and row.allowed_models == ["gpt-4o-mini"] and row.rate_per_minute == 600
    page.click("#new-key-box button.copy")
    copy_done = (  # the clipboard answers asynchronously: copied, or refused and the key selected instead
        "() => document.querySelector('#new-key-box button.copy').textContent === 'Copied'"
        " || window.getSelection().toString().trim() === document.getElementById('new-key').textContent.trim()"
    )
    wait_for(lambda: page.evaluate(copy_done), timeout=5, message="the copy button to copy or select the key")
    assert page.evaluate("() => navigator.clipboard.readText()") == key  # on the clipboard, this page may read it
    expect(page.locator(f"tr[data-key='{row.prefix}']")).to_contain_text("gpt-4o-mini")
    screenshot(page, "agents-new-key")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/api/v1/runs", headers=headers, timeout=10).status_code == 200

    # never again: not after a reload
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()

    # revoke it (htmx, after a confirmation)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"details.limits[data-key='{row.prefix}'] summary")
    page.click(f"details.limits[data-key='{row.prefix}'] .revoke-form button")
    expect(page.locator(f"tr[data-key='{row.prefix}']")).to_contain_text("revoked")
    expect(page.locator("#keys .notice")).to_contain_text("revoked")
    row.refresh_from_db()
    assert row.revoked_at is not None
    refused = httpx.get(f"{base}/api/v1/runs", headers=headers, timeout=10)
    assert refused.status_code in (200, 401)  # the web process may trust it for API_KEY_CACHE_SECONDS more

    # edit the agent: a bad team first (nothing is lost), then a good one, and disable it
    page.fill("#id_agent-team", "no spaces here")
    page.select_option("#id_agent-gateway_tool_review", "annotate")
    page.click("#agent-form button[type=submit]")
    expect(page.locator("#id_agent-team_error")).to_be_visible()
    expect(page.locator("#id_agent-gateway_tool_review")).to_have_value("annotate")
    page.fill("#id_agent-team", "billing")
    page.select_option("#id_agent-gateway_human", "hold")
    page.uncheck("#id_agent-enabled")
    page.click("#agent-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text(f"Agent {AGENT} saved.")
    expect(page.locator("h1 .badge")).to_have_text("disabled")
    agent = Agent.objects.get(name=AGENT)
    assert (agent.team, agent.enabled, agent.gateway_tool_review) == ("billing", False, "annotate")
    assert agent.gateway_human == "hold"
    screenshot(page, "agents-detail")

    # the agent's other key is refused with 403 (once the process's short key cache has let go of it)
    older = {"Authorization": f"Bearer {other_key}"}
    wait_for(lambda: httpx.get(f"{base}/api/v1/runs", headers=older, timeout=10).status_code == 403, timeout=15)
    page.goto(f"{base}/agents/")
    expect(page.locator(f"tr[data-agent='{AGENT}']")).to_contain_text("disabled")
    assert console_errors(page) == []
