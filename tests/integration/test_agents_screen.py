"""The Agents screen (`/agents/`, `/agents/<name>/`): who may open it, what it lists, and every change it makes
going through the actions: an agent's team, enabled and gateway tool review; keys created (shown once), limited
and revoked; an external agent added. Django's test client in-process (the enforcement of each setting over
real HTTP is in tests/integration/api/test_key_settings.py and tests/integration/gateway/test_key_settings.py;
the screen in Chromium in tests/browser/test_agents.py)."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from agentops.keys import actions as key_actions
from agentops.keys import tokens
from agentops.keys.models import ApiKey
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Agent
from tests.fixtures.people import ADA, ALICE, BEA, CHARLIE, ERIN, ROOT, client_for

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"ao_[0-9a-f]{12}_[A-Za-z0-9_-]+")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def agent() -> Agent:
    return agent_actions.ensure_agent("screen-agent", description="Answers <b>refunds</b>", team="support")


@pytest.mark.parametrize(("person", "allowed"), [(ADA, True), (ROOT, True), (ALICE, False), (ERIN, False),
                                                  (BEA, False), (CHARLIE, False)])  # fmt: skip
def test_only_agent_admins_and_superusers_open_the_agents_screen(agent, person, allowed):
    browser = client_for(person)
    key, _ = key_actions.create_api_key(agent.name)
    for url in ("/agents/", f"/agents/{agent.name}/"):
        assert browser.get(url).status_code == (200 if allowed else 403), (person, url)
    if not allowed:
        for url in (f"/agents/{agent.name}/", f"/agents/{agent.name}/keys/", f"/agents/{agent.name}/keys/{key.pk}/"):
            assert browser.post(url, {"agent-enabled": ""}).status_code == 403, url
        assert browser.post(f"/agents/{agent.name}/keys/{key.pk}/revoke").status_code == 403
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None and Agent.objects.get(pk=agent.pk).enabled
        assert ApiKey.objects.filter(agent=agent).count() == 1  # nothing changed
    nav = browser.get("/", follow=True).content.decode()
    assert ('href="/agents/"' in nav) == allowed


def test_signed_out_goes_to_the_login_page(agent):
    response = Client().get(f"/agents/{agent.name}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_list_shows_each_agents_settings_keys_and_last_use(agent):
    used, _ = key_actions.create_api_key(agent.name)
    key_actions.create_api_key(agent.name)
    revoked, _ = key_actions.create_api_key(agent.name)
    key_actions.revoke_api_key(revoked.pk)
    ApiKey.objects.filter(pk=used.pk).update(last_used_at=timezone.now() - timedelta(minutes=3))
    key_actions.create_api_key(agent.name, name="<b>laptop</b>")
    agent_actions.update_agent(agent.name, gateway_tool_review=Agent.ToolReview.ANNOTATE)
    page = client_for(ADA).get("/agents/").content.decode()
    row = re.search(r'<tr data-agent="screen-agent">(.*?)</tr>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells == ["screen-agent", "support", "enabled", "Answer at once; the escalation is raised beside it", "3",
                     "3 min ago"]  # fmt: skip
    detail = client_for(ADA).get(f"/agents/{agent.name}/").content.decode()
    assert "&lt;b&gt;laptop&lt;/b&gt;" in detail and "<b>laptop</b>" not in detail  # a key's name stays text


def test_an_agent_admin_edits_team_enabled_and_tool_review(agent):
    browser = client_for(ADA)
    page = f"/agents/{agent.name}/"
    assert agent.gateway_human == "fail"  # the default
    answer = browser.post(  # enabled unticked
        page, {"agent-team": "billing", "agent-gateway_tool_review": "off", "agent-gateway_human": "hold"}
    )
    assert answer.status_code == 302 and answer["Location"] == page
    agent.refresh_from_db()
    assert (agent.team, agent.enabled, agent.gateway_tool_review, agent.gateway_human) == (
        "billing",
        False,
        "off",
        "hold",
    )
    assert "Agent screen-agent saved." in browser.get(page).content.decode()

    bad = browser.post(page, {"agent-team": "no spaces!", "agent-enabled": "on", "agent-gateway_tool_review": "maybe"})
    assert bad.status_code == 422
    text = bad.content.decode()
    for field in ("team", "gateway_tool_review", "gateway_human"):
        assert f'id="id_agent-{field}_error"' in text, field
    agent.refresh_from_db()
    assert (agent.team, agent.enabled) == ("billing", False)  # nothing saved
    assert "Answers &lt;b&gt;refunds&lt;/b&gt;" in text  # the agent's description stays text


def test_a_new_key_is_shown_once_with_its_limits(agent):
    browser = client_for(ADA)
    answer = browser.post(
        f"/agents/{agent.name}/keys/",
        {
            "new-name": "ci",
            "new-scopes": ["gateway", "runs"],
            "new-allowed_models": "gpt-4o-mini, planning\nplanning",
            "new-expires_at": (timezone.localtime() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
            "new-rate_per_minute": "120",
            "new-max_in_flight": "4",
        },
    )
    assert answer.status_code == 201 and "no-store" in answer["Cache-Control"]
    [key] = KEY_RE.findall(answer.content.decode())
    row = ApiKey.objects.get(prefix=tokens.prefix_of(key))
    assert (row.name, row.scopes, row.allowed_models) == ("ci", ["gateway", "runs"], ["gpt-4o-mini", "planning"])
    assert (row.rate_per_minute, row.max_in_flight, row.created_by) == (120, 4, "ada")
    assert row.expires_at > timezone.now() + timedelta(days=29)
    principal = tokens.verify(key)
    assert principal.allowed_models == {"gpt-4o-mini", "planning"} and principal.rate_per_minute == 120
    again = browser.get(f"/agents/{agent.name}/").content.decode()
    assert key not in again and KEY_RE.search(again) is None and row.prefix in again  # never shown again
    assert "gpt-4o-mini, planning" in again and "120 a minute" in again


def test_a_key_form_with_bad_limits_is_answered_with_each_fields_error(agent):
    browser = client_for(ADA)
    answer = browser.post(
        f"/agents/{agent.name}/keys/",
        {
            "new-allowed_models": "gpt-4o, a" + "b" * 300,
            "new-expires_at": "2001-01-01T00:00",
            "new-rate_per_minute": "0",
            "new-max_in_flight": "",
        },
        **HTMX,
    )
    assert answer.status_code == 422
    text = answer.content.decode()
    assert text.lstrip().startswith('<section class="card" id="keys">')  # htmx: the keys section alone
    for field in ("allowed_models", "expires_at", "rate_per_minute", "max_in_flight", "scopes"):
        assert f'id="id_new-{field}_error"' in text, field
    assert "Pick a time in the future" in text and not ApiKey.objects.exists()


def test_limits_are_edited_and_a_key_revoked_through_htmx(agent):
    row, key = key_actions.create_api_key(agent.name)
    browser = client_for(ROOT)
    url = f"/agents/{agent.name}/keys/{row.pk}/"
    prefix = f"key-{row.pk}"
    answer = browser.post(
        url,
        {f"{prefix}-allowed_models": "gpt-4o", f"{prefix}-rate_per_minute": "30", f"{prefix}-max_in_flight": "2"},
        **HTMX,
    )
    assert answer.status_code == 200 and f"Key {row.prefix}… saved." in answer.content.decode()
    row.refresh_from_db()
    assert (row.allowed_models, row.rate_per_minute, row.max_in_flight, row.expires_at) == (["gpt-4o"], 30, 2, None)
    bad = browser.post(url, {f"{prefix}-max_in_flight": "0"}, **HTMX)
    assert bad.status_code == 422 and f'id="id_{prefix}-max_in_flight_error"' in bad.content.decode()

    revoked = browser.post(f"/agents/{agent.name}/keys/{row.pk}/revoke", **HTMX)
    assert revoked.status_code == 200 and "revoked: it is refused from now on" in revoked.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is not None and tokens.verify(key) is None
    assert f'action="/agents/{agent.name}/keys/{row.pk}/revoke"' not in revoked.content.decode()  # no form any more
    # another agent's key is not reachable under this agent's address
    other, _ = key_actions.create_api_key("other-agent")
    assert browser.post(f"/agents/{agent.name}/keys/{other.pk}/revoke").status_code == 404
    assert ApiKey.objects.get(pk=other.pk).revoked_at is None


def test_an_external_agent_is_added_from_the_list(agent):
    browser = client_for(ADA)
    answer = browser.post("/agents/", {"name": "billing-bot", "team": "billing"})
    assert answer.status_code == 302 and answer["Location"] == "/agents/billing-bot/"
    assert Agent.objects.get(name="billing-bot").team == "billing"
    taken = browser.post("/agents/", {"name": "billing-bot"})
    assert taken.status_code == 422 and "already exists" in taken.content.decode()
    assert browser.get("/agents/no-such-agent/").status_code == 404


def test_the_demo_seed_has_an_agent_admin_login_who_opens_the_agents_screen(tmp_path):
    out = io.StringIO()
    call_command("seed_demo", credentials_file=str(tmp_path / "credentials.txt"), stdout=out)
    line = next(line for line in (tmp_path / "credentials.txt").read_text().splitlines() if line.startswith("agent_"))
    role, username, password = line.split()
    assert (role, username) == ("agent_admin", "agents") and f"agent_admin   agents     {password}" in out.getvalue()
    browser = Client()
    assert browser.login(username=username, password=password)
    assert browser.get("/agents/").status_code == 200 and browser.get("/budgets/").status_code == 403
