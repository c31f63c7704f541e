"""Admin-editable runtime settings reach running processes without a restart; operators drive breakers
from the ops page; the ops probe runs the guard pipeline on a real worker."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.core.exceptions import ValidationError

from agentops.config import actions as config_actions
from agentops.config.models import FallbackRule, ModelRoute, Provider, RetryPolicy
from agentops.config.source import config_source
from agentops.runtime.errors import ErrorClass
from tests.fixtures.factories import make_budget
from tests.fixtures.people import ROOT
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for
from tests.integration.test_celery_and_live import _listen, _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def defaults(redis_client):
    """Flushes between transactional tests remove the migration's seed rows; put them back."""
    reseed_runtime()
    config_source().invalidate()


def test_a_changed_retry_policy_reaches_this_process_within_a_second(defaults):
    assert config_source().get().retry.policy_for(ErrorClass.RATE_LIMIT).max_retries == 3
    policy = RetryPolicy.objects.get(error_class="RateLimitError")
    policy.max_retries = 7
    config_actions.save_runtime_object(policy)
    started = time.monotonic()
    assert wait_for(lambda: config_source().get().retry.policy_for(ErrorClass.RATE_LIMIT).max_retries == 7, timeout=8)
    assert time.monotonic() - started < 2.5


def test_a_running_worker_uses_a_changed_route_without_restart(defaults, worker):
    from agentops.ops.tasks import probe_route

    first = probe_route.delay("planning", "Plan a trip to Lisbon").get(timeout=30)
    assert first["ok"] and first["model"] == "gpt-4o"

    route = ModelRoute.objects.get(operation="planning")
    route.primary_model = "gpt-4.1"
    config_actions.save_runtime_object(route)

    def worker_uses_new_model():
        return probe_route.delay("planning", "Plan a trip to Lisbon").get(timeout=30)["model"] == "gpt-4.1"

    assert wait_for(worker_uses_new_model, timeout=10, interval=0.3)
    assert worker.popen.poll() is None  # the same worker process: it was never restarted


def test_a_changed_rule_answers_when_every_model_fails(defaults):
    from agentops.wiring import probe_route

    simulated = Provider.objects.get(name="simulated")
    simulated.fault_rate = 1.0  # every model call fails with ServiceUnavailable
    config_actions.save_runtime_object(simulated)
    for policy in RetryPolicy.objects.all():
        policy.max_retries, policy.base_delay = 0, 0.0
        config_actions.save_runtime_object(policy)
    config_actions.save_runtime_object(
        FallbackRule(name="refund-policy", pattern=r"\brefund\b", answer="Refunds take 5 days.", position=1)
    )
    result = wait_for(
        lambda: (r := probe_route("default", "Where is my refund?")).get("handler") == "rules" and r, timeout=8
    )
    assert result["text"] == "Refunds take 5 days."
    assert [hop["outcome"] for hop in result["hops"]][:2] == ["failed", "failed"]
    assert result["hops"][-1]["handler"] == "rules"


def test_invalid_runtime_settings_are_refused_with_a_clear_message(defaults):
    with pytest.raises(ValidationError, match="needs a base URL"):
        config_actions.save_runtime_object(Provider(name="upstream", kind=Provider.Kind.OPENAI))
    with pytest.raises(ValidationError, match="Not a valid regular expression"):
        config_actions.save_runtime_object(FallbackRule(name="broken", pattern="(unclosed", answer="x"))
    assert not Provider.objects.filter(name="upstream").exists()


def test_admin_edits_go_through_actions_and_reload_workers(defaults, client):
    from agentops.config.source import current_version

    client.force_login(ROOT.user())
    policy = RetryPolicy.objects.get(error_class="ConnectionError")
    before = current_version()
    response = client.post(
        f"/admin/agentops/retrypolicy/{policy.pk}/change/",
        {
            "error_class": "ConnectionError",
            "max_retries": 2,
            "base_delay": 0.25,
            "max_delay": 5,
            "multiplier": 2,
            "jitter": "on",
        },
    )
    assert response.status_code == 302, response.content[:500]
    assert current_version() != before
    assert config_source().get().retry.policy_for(ErrorClass.CONNECTION).max_retries == 2 or wait_for(
        lambda: config_source().get().retry.policy_for(ErrorClass.CONNECTION).max_retries == 2, timeout=8
    )


def test_operator_forces_a_breaker_open_from_the_ops_page_and_everyone_sees_it(defaults, client, web):
    from agentops.wiring import breaker_registry, probe_route

    cookie = _session_cookie(client, ROOT)
    assert probe_route("planning", "warm the breaker up")["handler"] == "primary"
    ws_url = web.extra["url"].replace("http://", "ws://") + "/ws/live/ops/"

    async def scenario():
        listener = asyncio.create_task(_listen(ws_url, cookie, count=1))
        await asyncio.sleep(0.5)
        response = await asyncio.to_thread(client.post, "/ops/breakers/force_open", {"breaker": "simulated:gpt-4o"})
        assert response.status_code == 200
        assert b"forced open" in response.content
        return await listener

    [event] = asyncio.run(scenario())
    assert event["data"]["breaker"] == "simulated:gpt-4o"
    assert breaker_registry().get("simulated", "gpt-4o").state().value == "open"

    result = probe_route("planning", "plan while the primary is blocked")
    assert result["hops"][0]["outcome"] == "breaker_open"
    assert result["handler"] == "backup" and result["model"] == "gpt-4o-mini"

    assert client.post("/ops/breakers/reset", {"breaker": "simulated:gpt-4o"}).status_code == 200
    assert probe_route("planning", "and back again")["handler"] == "primary"
    assert client.post("/ops/breakers/explode", {"breaker": "simulated:gpt-4o"}).status_code == 400
    assert client.post("/ops/breakers/reset", {"breaker": "no-colon"}).status_code == 400
    assert client.post("/ops/breakers/reset").status_code == 400


def test_the_ops_page_survives_any_breaker_name_in_redis_and_operates_model_ids_with_slashes(
    defaults, client, redis_client
):
    """vLLM / OpenRouter model ids hold "/"; names live in Redis, so a name the URL could not carry (or any
    garbage in the set) used to answer 500 on every visit until Redis was flushed."""
    from agentops.wiring import breaker_registry

    slashed = "openrouter:meta-llama/Llama-3-8B?x=1#frag"
    breaker_registry().get("openrouter", "meta-llama/Llama-3-8B?x=1#frag")  # registers the name in Redis
    redis_client.sadd("agentops:breakers", "no-colon", "<b>odd</b>:\nname", ":")
    client.force_login(ROOT.user())
    page = client.get("/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-breaker="openrouter:meta-llama/Llama-3-8B?x=1#frag"' in html
    assert 'data-breaker="no-colon"' in html and "unreadable" in html
    assert "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html

    forced = client.post("/ops/breakers/force_open", {"breaker": slashed})
    assert forced.status_code == 200 and b"forced open" in forced.content
    assert breaker_registry().get("openrouter", "meta-llama/Llama-3-8B?x=1#frag").state().value == "open"
    assert client.post("/ops/breakers/reset", {"breaker": slashed}).status_code == 200
    assert breaker_registry().get("openrouter", "meta-llama/Llama-3-8B?x=1#frag").state().value == "closed"
    assert client.get("/ops/status").status_code == 200


def test_the_ops_page_shows_the_layered_timeouts_in_force(defaults, client, redis_client):
    from agentops.config.models import RuntimeSettings

    for key in redis_client.scan_iter(match="agentops:latency:*"):  # no samples: the empty state shows
        redis_client.delete(key)
    client.force_login(ROOT.user())
    assert "LLM calls 30 s, tools 60 s" in client.get("/ops/status").content.decode()
    row = RuntimeSettings.objects.get()
    row.llm_timeout, row.tool_timeout = 12.5, 90
    config_actions.save_runtime_object(row)
    config_source().invalidate()
    html = client.get("/ops/status").content.decode()
    assert "LLM calls 12.5 s, tools 90 s" in html and "llm 30 s" not in html


def test_ops_probe_runs_on_a_worker_and_shows_hops(defaults, client, worker):
    client.force_login(ROOT.user())
    response = client.post("/ops/probe", {"operation": "planning", "prompt": "<script>alert(1)</script> plan"})
    assert response.status_code == 200
    task_id = response.content.decode().split("/ops/probe/")[1].split('"')[0]
    page = wait_for(
        lambda: (r := client.get(f"/ops/probe/{task_id}").content.decode()) and "answered" in r and r, timeout=8
    )
    assert "primary" in page and "gpt-4o" in page
    assert "<script>alert(1)</script>" not in page  # the model echoes the prompt: escaped, inside hx-disable
    assert "&lt;script&gt;" in page and "hx-disable" in page
    bad = client.post("/ops/probe", {"operation": "no spaces allowed", "prompt": ""})
    assert bad.status_code == 422 and b"field-error" in bad.content


def test_phase_timeouts_are_the_seeds_and_an_admin_edit_reaches_the_runs(defaults, client):
    from django.forms.models import model_to_dict

    from agentops.config.models import RuntimeSettings
    from agentops.runs.execution import run_settings

    seed_seconds = {"planning": 15.0, "tool_search": 10.0, "tool_execution": 45.0, "response_generation": 20.0}
    seed_critical = {"planning": True, "tool_search": False, "tool_execution": False, "response_generation": True}
    row = RuntimeSettings.objects.get()
    assert row.step_timeouts() == (seed_seconds, seed_critical)
    assert dict(config_source().get().timeouts.steps) == seed_seconds
    settings = run_settings()
    assert (dict(settings.phase_timeouts), dict(settings.critical_phases)) == (seed_seconds, seed_critical)

    client.force_login(ROOT.user())
    page = client.get(f"/admin/agentops/runtimesettings/{row.pk}/change/").content.decode()
    for field in ("planning_timeout", "tool_execution_critical", "response_generation_timeout", "human_timeout"):
        assert f'name="{field}"' in page
    data = {k: ("on" if v is True else v) for k, v in model_to_dict(row).items() if v is not None and v is not False}
    data.update(planning_timeout="5", tool_execution_critical="on", human_timeout="90")
    data.pop("tool_search_critical", None)
    response = client.post(f"/admin/agentops/runtimesettings/{row.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]

    def edited() -> bool:
        timeouts = config_source().get().timeouts
        return timeouts.steps["planning"] == 5.0 and timeouts.critical["tool_execution"] and timeouts.human == 90.0

    assert wait_for(edited, timeout=8)
    assert run_settings().critical_phases == {**seed_critical, "tool_execution": True}
    assert run_settings().phase_timeouts["planning"] == 5.0


def test_the_ops_probe_reports_a_budget_refusal_as_one_naming_the_budget(defaults, client, worker):
    make_budget("probe-tiny", limit_tokens=10, on_block="fail")
    client.force_login(ROOT.user())
    response = client.post("/ops/probe", {"operation": "planning", "prompt": "plan something long enough"})
    task_id = response.content.decode().split("/ops/probe/")[1].split('"')[0]
    page = wait_for(
        lambda: (r := client.get(f"/ops/probe/{task_id}").content.decode()) and "badge" in r and r, timeout=8
    )
    assert "budget refused" in page and "<strong>probe-tiny</strong>" in page
    assert "task failed" not in page and "BudgetExceeded" not in page


def test_the_seeds_answer_checks_and_caches_are_the_defaults_and_editable(defaults):
    """Runtime settings and model routes → RuntimeConfig: the seed's numbers by default, an admin's edit
    (answer checks per route, a cache's TTL and size) within a second, and a live cache follows it."""
    from agentops.config.models import RuntimeSettings
    from agentops.runtime.cache import CacheSpec
    from agentops.runtime.validation import RouteValidation
    from agentops.wiring import agent_caches

    config = config_source().get()
    assert (config.validation.min_chars, config.validation.rejected_phrases) == (10, ("I don't know", "error"))
    assert config.validation.by_operation == {"classify": RouteValidation(1, ("I don't know", "error"))}
    assert config.caches == {
        "llm_responses": CacheSpec("llm_responses", 3600, 1000),
        "tool_results": CacheSpec("tool_results", 1800, 500),
        "user_profiles": CacheSpec("user_profiles", 86400, 100),
    }

    route = ModelRoute.objects.get(operation="planning")
    route.own_answer_checks, route.min_answer_chars, route.rejected_phrases = True, 0, ""
    config_actions.save_runtime_object(route)
    row = RuntimeSettings.objects.get()
    row.rejected_phrases, row.profile_cache_ttl, row.profile_cache_size = "n/a\nunknown", 600, 7
    config_actions.save_runtime_object(row)
    config = wait_for(lambda: (c := config_source().get()).caches["user_profiles"].max_entries == 7 and c, timeout=8)
    assert config.validation.rejected_phrases == ("n/a", "unknown")
    assert config.validation.for_operation("planning") == (0, ())
    assert config.caches["user_profiles"] == CacheSpec("user_profiles", 600, 7)
    assert agent_caches()["user_profiles"].spec == CacheSpec("user_profiles", 600, 7)  # the running cache too
