"""Budget admin screens and the cost dashboard through the Django test client (real PostgreSQL): roles,
budget forms (errors per field, nothing typed is lost), delete, the price history, webhooks with the test
button and the delivery log, alert thresholds, acknowledging alerts, bounded query counts with many
budgets/counters/usage rows, and /costs/data.json numbers against a small known ledger (rollups + the
un-rolled tail, never counted twice)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from budgets import queries
from budgets.actions import alerts, ledger, periods, prices, reservations, rollups, webhooks
from budgets.actions import alerts as alert_actions
from budgets.actions import webhooks as webhook_actions
from budgets.models import (
    Alert,
    AlertSettings,
    Budget,
    BudgetCounter,
    ModelPrice,
    UsageRecord,
    Webhook,
    WebhookDelivery,
)
from tests.fixtures.factories import make_budget, seed_prices
from tests.fixtures.people import ALICE, BEA, ROOT, client_for

pytestmark = pytest.mark.django_db

GET_URLS = [
    "/budgets/",
    "/budgets/new/",
    "/budgets/prices/",
    "/budgets/webhooks/",
    "/budgets/alerts/",
    "/budgets/alerts/badge",
    "/costs/",
    "/costs/data.json",
]


@pytest.fixture(autouse=True)
def clean(settings, redis_client):  # redis_client: no cached dashboard sums from an earlier test
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # sign-ins are not the subject
    Budget.objects.all().delete()
    seed_prices()


@pytest.fixture
def admin_client() -> Client:
    """Bea, the cast's budget admin, signed in."""
    return client_for(BEA)


def budget_post(**overrides) -> dict:
    data = {
        "name": "Research daily",
        "scope": "agent",
        "scope_key": "research",
        "period": "day",
        "timezone": "Europe/Berlin",
        "limit_tokens": "50000",
        "limit_usd": "",
        "soft_threshold_pct": "80",
        "hard_stop": "on",
        "operation_limits": "planning=1000, response=1500",
        "on_block": "escalate",
        "downgrade_model": "",
        "enabled": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def field_errors(html: str, field: str) -> list[str]:
    return re.findall(rf'<p class="field-error" id="id_{field}_error">([^<]*)</p>', html)


def text(response) -> str:
    return response.content.decode()


# --- roles --------------------------------------------------------------------------------------------


def test_reviewers_get_403_and_anonymous_users_are_sent_to_login():
    budget = make_budget("Guarded", limit_tokens=100_000)
    alert = alert_actions.fire_alert(Alert.Kind.SOFT_THRESHOLD, "k1", "passed 80%")
    hook = webhook_actions.save_webhook(Webhook(name="ops", url="https://hooks.example.com/x"))
    price = ModelPrice.objects.first()
    posts = [
        "/budgets/new/",
        f"/budgets/{budget.pk}/edit/",
        f"/budgets/{budget.pk}/delete/",
        "/budgets/prices/",
        f"/budgets/prices/{price.pk}/delete",
        "/budgets/webhooks/",
        "/budgets/webhooks/settings",
        f"/budgets/webhooks/{hook.pk}/",
        f"/budgets/webhooks/{hook.pk}/delete",
        f"/budgets/webhooks/{hook.pk}/test",
        f"/budgets/alerts/{alert.pk}/acknowledge",
        "/budgets/alerts/acknowledge-all",
    ]
    reviewer = client_for(ALICE)
    for url in [*GET_URLS, f"/budgets/{budget.pk}/edit/", f"/budgets/webhooks/{hook.pk}/"]:
        assert reviewer.get(url).status_code == 403, url
    for url in posts:
        assert reviewer.post(url, budget_post(name="x")).status_code == 403, url
    anonymous = Client()
    for url in GET_URLS:
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    # nothing changed
    assert Budget.objects.filter(pk=budget.pk, name="Guarded").exists()
    assert Webhook.objects.filter(pk=hook.pk).exists() and not WebhookDelivery.objects.exists()
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None
    budget_admin = client_for(BEA)
    for url in GET_URLS:
        assert budget_admin.get(url).status_code == 200, url


# --- budgets ------------------------------------------------------------------------------------------


def test_budget_form_reports_each_error_on_its_field_and_keeps_the_input(admin_client):
    make_budget("Daily (all agents)", limit_tokens=100_000)
    response = admin_client.post(
        "/budgets/new/",
        budget_post(
            name="Daily (all agents)",
            timezone="Mars/Olympus_Mons",
            operation_limits="planning=abc, response=-5, tool_calls 20",
            limit_tokens="",
        ),
    )
    assert response.status_code == 422
    html = text(response)
    assert field_errors(html, "name") == ["A budget with this name already exists: pick another name."]
    assert "is not a time zone name" in field_errors(html, "timezone")[0]
    ops = field_errors(html, "operation_limits")
    assert any("planning" in e and "whole number" in e for e in ops), ops
    assert any("response" in e and "positive" in e for e in ops), ops
    assert any("tool_calls 20" in e for e in ops), ops
    # everything typed comes back
    assert 'value="Daily (all agents)"' in html
    assert 'value="Mars/Olympus_Mons"' in html
    assert 'value="planning=abc, response=-5, tool_calls 20"' in html
    assert 'value="research"' in html
    assert Budget.objects.count() == 1

    # no limit of any kind; zero and negative limits
    response = admin_client.post("/budgets/new/", budget_post(limit_tokens="", operation_limits=""))
    assert response.status_code == 422
    assert field_errors(text(response), "limit_tokens") == [
        "Set a token limit, a dollar limit or a per-operation limit."
    ]
    response = admin_client.post("/budgets/new/", budget_post(limit_tokens="0", limit_usd="-1"))
    assert response.status_code == 422
    assert "positive" in field_errors(text(response), "limit_tokens")[0]
    assert "more than $0" in field_errors(text(response), "limit_usd")[0]
    # a global budget with a key
    response = admin_client.post("/budgets/new/", budget_post(scope="global"))
    assert response.status_code == 422
    assert "leave this blank" in field_errors(text(response), "scope_key")[0]
    assert Budget.objects.count() == 1


def test_create_edit_and_delete_a_budget(admin_client):
    response = admin_client.post("/budgets/new/", budget_post(limit_usd="12.5"))
    assert response.status_code == 302 and response["Location"] == "/budgets/"
    budget = Budget.objects.get(name="Research daily")
    assert budget.operation_limits == {"planning": 1000, "response": 1500}
    assert (budget.scope, budget.scope_key, budget.timezone) == ("agent", "research", "Europe/Berlin")
    assert (budget.limit_tokens, budget.limit_usd, budget.hard_stop) == (50_000, Decimal("12.5"), True)

    page = text(admin_client.get("/budgets/"))
    assert "Research daily" in page and "agent research" in page and "Europe/Berlin" in page
    assert "planning=1000, response=1500" in page

    edit = text(admin_client.get(f"/budgets/{budget.pk}/edit/"))
    assert 'value="planning=1000, response=1500"' in edit
    response = admin_client.post(
        f"/budgets/{budget.pk}/edit/",
        budget_post(operation_limits="planning: 900\nreflection=400", hard_stop=None, limit_tokens="60000"),
    )
    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.operation_limits == {"planning": 900, "reflection": 400}
    assert (budget.limit_tokens, budget.hard_stop) == (60_000, False)
    # JSON works too
    response = admin_client.post(f"/budgets/{budget.pk}/edit/", budget_post(operation_limits='{"planning": 700}'))
    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.operation_limits == {"planning": 700}

    confirm = admin_client.get(f"/budgets/{budget.pk}/delete/")
    assert confirm.status_code == 200 and "Delete budget" in text(confirm)
    assert Budget.objects.filter(pk=budget.pk).exists()
    response = admin_client.post(f"/budgets/{budget.pk}/delete/", follow=True)
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert "deleted" in text(response)


def test_a_session_budget_lists_each_agents_session_on_its_own(admin_client):
    sessions = make_budget("Each session", scope="session", limit_tokens=1_000)
    for agent, tokens in (("alpha", 600), ("beta", 100)):
        ledger.record_usage(
            {"agent": agent, "session_id": "s1", "model": "gpt-4o", "input_tokens": tokens, "output_tokens": 0}
        )
    page = text(admin_client.get("/budgets/"))
    per = page[page.index(f'data-budget="{sessions.pk}"') :]
    assert "2 subjects this period" in per
    assert per.index(">session s1 of agent alpha<") < per.index(">session s1 of agent beta<")
    assert "600 spent + 0 reserved of 1,000 (60%)" in per


def test_top_sessions_list_each_agents_session_apart():
    for agent, tokens in (("alpha", 600), ("beta", 100), ("alpha", 100)):
        ledger.record_usage(
            {"agent": agent, "session_id": "s1", "model": "gpt-4o", "input_tokens": tokens, "output_tokens": 0}
        )
    rollups.roll_up_usage()  # one of each in the rollup, then one more in the un-rolled tail
    ledger.record_usage({"agent": "beta", "session_id": "s1", "model": "gpt-4o", "input_tokens": 50})
    rows = [
        (row["session_id"], row["agent"], row["calls"], row["tokens"]) for row in queries.top_sessions(timezone.now())
    ]
    assert rows == [("s1", "alpha", 2, 700), ("s1", "beta", 2, 150)]


def test_list_shows_utilization_reservations_and_top_subjects(admin_client):
    daily = make_budget("Everyone", limit_tokens=10_000, limit_usd=Decimal("2"))
    per_agent = make_budget("Each agent", scope="agent", limit_tokens=1_000)
    ledger.record_usage({"agent": "alpha", "model": "gpt-4o", "input_tokens": 400, "output_tokens": 100})
    ledger.record_usage({"agent": "beta", "model": "gpt-4o", "input_tokens": 150, "output_tokens": 50})
    held = reservations.reserve({"agent": "alpha", "model": "gpt-4o", "estimated_input_tokens": 200, "operation": "x"})
    assert held
    page = text(admin_client.get("/budgets/"))
    section = page[page.index(f'data-budget="{daily.pk}"') :]
    # 700 spent + 200 reserved of 10,000 tokens
    assert "700 spent + 200 reserved of 10,000 (9%)" in section
    assert "seg spent w7" in section and "seg reserved w2" in section
    assert "1 reservation" in section
    per = page[page.index(f'data-budget="{per_agent.pk}"') :]
    assert "2 subjects this period" in per
    assert per.index(">alpha<") < per.index(">beta<")  # closest to the limit first
    assert "500 spent + 200 reserved of 1,000 (70%)" in per
    # the page's own section is the current one in the navigation, not its sibling /costs/
    assert '<a href="/budgets/" aria-current="page">' in page and '<a href="/costs/" aria-current' not in page
    # the htmx refresh answers the fragment only
    fragment = text(admin_client.get("/budgets/", headers={"HX-Request": "true"}))
    assert fragment.lstrip().startswith('<div id="budgets-live"') and "<html" not in fragment


def test_budget_list_and_cost_data_query_counts_stay_bounded(admin_client, django_assert_max_num_queries):
    now = timezone.now()
    for i in range(12):
        make_budget(f"global {i}", limit_tokens=100_000, limit_usd=Decimal("50"), period="day" if i % 2 else "month")
    for scope in ("agent", "session", "team"):
        make_budget(f"each {scope}", scope=scope, limit_tokens=5_000)
    budgets = list(Budget.objects.all())
    counters = []
    for budget in budgets:
        subjects = [""] if budget.scope == "global" else [f"s{j}" for j in range(150)]
        counters += [
            BudgetCounter(
                budget=budget,
                subject=s,
                period_start=periods.period_start(budget, now),
                spent_tokens=j * 10,
                spent_usd=Decimal(j) / 100,
            )
            for j, s in enumerate(subjects)
        ]
    BudgetCounter.objects.bulk_create(counters)
    records = [
        UsageRecord(
            agent=f"agent-{i % 5}",
            session_id=f"sess-{i % 40}",
            model=("gpt-4o", "gpt-4o-mini")[i % 2],
            operation=("planning", "response", "reflection")[i % 3],
            input_tokens=100,
            output_tokens=20,
            cost_usd=Decimal("0.001"),
            created_at=now - dt.timedelta(hours=i % 700),
        )
        for i in range(3000)
    ]
    UsageRecord.objects.bulk_create(records)
    rollups.roll_up_usage()
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                agent="tail",
                session_id="sess-1",
                model="gpt-4o",
                operation="planning",
                cost_usd=Decimal("1"),
                created_at=now,
            )
        ]
        * 1
    )
    with django_assert_max_num_queries(8) as captured:
        response = admin_client.get("/budgets/")
    assert response.status_code == 200
    print("GET /budgets/ queries:", len(captured.captured_queries))
    with django_assert_max_num_queries(10) as captured:
        response = admin_client.get("/costs/data.json")
    assert response.status_code == 200
    print("GET /costs/data.json queries:", len(captured.captured_queries))
    assert len(response.json()["forecasts"]) == 9  # 6 day globals + 3 per-subject day budgets
    with django_assert_max_num_queries(4):
        assert admin_client.get("/costs/").status_code == 200


# --- prices -------------------------------------------------------------------------------------------


def test_price_change_adds_a_row_and_keeps_the_history(admin_client):
    before = list(ModelPrice.objects.filter(model="gpt-4o").values_list("pk", "input_per_1k"))
    page = text(admin_client.get("/budgets/prices/?model=gpt-4o"))
    assert 'value="0.002500"' in page or 'value="0.0025"' in page  # the form starts from the current price
    response = admin_client.post(
        "/budgets/prices/", {"model": "gpt-4o", "input_per_1k": "0.002", "output_per_1k": "0.008", "note": "cut"}
    )
    assert response.status_code == 302
    rows = list(ModelPrice.objects.filter(model="gpt-4o").order_by("effective_from"))
    assert [(r.pk, r.input_per_1k) for r in rows[:-1]] == before  # old rows untouched
    assert (rows[-1].input_per_1k, rows[-1].output_per_1k, rows[-1].created_by) == (
        Decimal("0.002"),
        Decimal("0.008"),
        "bea",
    )
    assert prices.price_in_force("gpt-4o", timezone.now()).pk == rows[-1].pk
    page = text(admin_client.get("/budgets/prices/"))
    assert "History (2 rows)" in page

    # a price in the past is refused, keeping the input
    response = admin_client.post(
        "/budgets/prices/",
        {"model": "gpt-4o", "input_per_1k": "0.5", "output_per_1k": "0.9", "effective_from": "2020-01-01T00:00"},
    )
    assert response.status_code == 422
    html = text(response)
    assert "now or later" in field_errors(html, "effective_from")[0]
    assert 'value="0.5"' in html and 'value="2020-01-01T00:00"' in html
    # negative price
    response = admin_client.post("/budgets/prices/", {"model": "gpt-4o", "input_per_1k": "-1", "output_per_1k": "1"})
    assert response.status_code == 422 and field_errors(text(response), "input_per_1k")

    # a future row: deletable while unused; a current or charged one is not
    future = (timezone.now() + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    response = admin_client.post(
        "/budgets/prices/",
        {"model": "gpt-4o", "input_per_1k": "0.001", "output_per_1k": "0.004", "effective_from": future},
    )
    assert response.status_code == 302
    planned = ModelPrice.objects.filter(model="gpt-4o").latest("effective_from")
    assert 'data-state="future"' in text(admin_client.get("/budgets/prices/"))
    response = admin_client.post(f"/budgets/prices/{planned.pk}/delete", follow=True)
    assert not ModelPrice.objects.filter(pk=planned.pk).exists() and "Deleted the future" in text(response)
    current = rows[-1]
    response = admin_client.post(f"/budgets/prices/{current.pk}/delete", follow=True)
    assert ModelPrice.objects.filter(pk=current.pk).exists() and "not deleted" in text(response)
    # charged: delete_price says no
    charged = prices.set_price(
        "gpt-4o", Decimal("1"), Decimal("1"), effective_from=timezone.now() + dt.timedelta(days=1)
    )
    UsageRecord.objects.create(model="gpt-4o", operation="x", price=charged, created_at=timezone.now())
    response = admin_client.post(f"/budgets/prices/{charged.pk}/delete", follow=True)
    assert ModelPrice.objects.filter(pk=charged.pk).exists() and "already charged" in text(response)


# --- webhooks, thresholds, alerts ---------------------------------------------------------------------


def test_webhook_crud_test_button_and_delivery_log(admin_client):
    response = admin_client.post("/budgets/webhooks/", {"name": "ops", "url": "not a url", "min_severity": "info"})
    assert response.status_code == 422
    assert field_errors(text(response), "url") and 'value="not a url"' in text(response)
    response = admin_client.post(
        "/budgets/webhooks/",
        {"name": "ops", "url": "https://hooks.example.com/T1", "min_severity": "warning", "enabled": "on"},
    )
    assert response.status_code == 302
    hook = Webhook.objects.get(name="ops")
    assert (hook.url, hook.min_severity, hook.enabled) == ("https://hooks.example.com/T1", "warning", True)

    response = admin_client.post(
        f"/budgets/webhooks/{hook.pk}/", {"name": "ops-renamed", "url": hook.url, "min_severity": "critical"}
    )
    assert response.status_code == 302
    hook.refresh_from_db()
    assert (hook.name, hook.min_severity, hook.enabled) == ("ops-renamed", "critical", False)

    response = admin_client.post(f"/budgets/webhooks/{hook.pk}/test")
    assert response.status_code == 302
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert delivery.alert.kind == Alert.Kind.TEST and delivery.status == "pending"
    webhooks.record_delivery_attempt(delivery.pk, status_code=500, error="HTTP 500 <b>boom</b>", final=False)
    webhooks.record_delivery_attempt(delivery.pk, status_code=200, error="", final=True)
    page = text(admin_client.get("/budgets/webhooks/"))
    row = page[page.index(f'data-delivery="{delivery.pk}"') :]
    assert 'data-status="delivered"' in row and "2 attempts" in row
    assert "HTTP 500 &lt;b&gt;boom&lt;/b&gt;" in row  # escaped

    response = admin_client.post(f"/budgets/webhooks/{hook.pk}/delete")
    assert response.status_code == 302 and not Webhook.objects.filter(pk=hook.pk).exists()


def test_alert_thresholds_are_validated_and_saved(admin_client):
    response = admin_client.post(
        "/budgets/webhooks/settings", {"session_spike_usd": "-1", "error_rate_pct": "150", "error_rate_min_calls": "5"}
    )
    assert response.status_code == 422
    html = text(response)
    assert field_errors(html, "session_spike_usd") and field_errors(html, "error_rate_pct")
    assert 'value="-1"' in html and 'value="150"' in html
    response = admin_client.post(
        "/budgets/webhooks/settings",
        {"daily_spend_usd": "250", "session_spike_usd": "2.5", "error_rate_pct": "15", "error_rate_min_calls": "40"},
    )
    assert response.status_code == 302
    config = AlertSettings.current()
    assert (config.session_spike_usd, config.error_rate_pct, config.error_rate_min_calls) == (Decimal("2.5"), 15, 40)
    assert config.daily_spend_usd == Decimal("250")


def test_the_alert_form_says_the_seeds_units(admin_client):
    html = text(admin_client.get("/budgets/webhooks/"))
    assert "Session spike (USD one session spends in one hour)" in html
    assert "US dollars: alert when one session (one agent&#x27;s session id) spends more than this" in html
    assert "Daily spend (USD, all agents, today)" in html


def test_acknowledge_one_and_all_alerts(admin_client):
    first = alerts.fire_alert(Alert.Kind.SOFT_THRESHOLD, "a1", "budget <script>x</script> passed 80%")
    second = alerts.fire_alert(Alert.Kind.EXHAUSTED, "a2", "exhausted", severity=Alert.Severity.CRITICAL)
    third = alerts.fire_alert(Alert.Kind.SESSION_SPIKE, "a3", "spike")
    page = text(admin_client.get("/budgets/alerts/"))
    assert 'data-count="3"' in page  # the header badge
    assert "budget &lt;script&gt;x&lt;/script&gt; passed 80%" in page and "<script>x</script>" not in page

    fragment = text(admin_client.post(f"/budgets/alerts/{first.pk}/acknowledge", headers={"HX-Request": "true"}))
    assert fragment.lstrip().startswith('<div id="alerts-live"') and 'data-open="2"' in fragment
    first.refresh_from_db()
    assert first.acknowledged_at is not None and first.acknowledged_by.username == "bea"
    # a second acknowledgement changes nothing
    response = admin_client.post(f"/budgets/alerts/{first.pk}/acknowledge", follow=True)
    assert "already acknowledged" in text(response)

    response = admin_client.post("/budgets/alerts/acknowledge-all", follow=True)
    assert "Acknowledged 2 alerts" in text(response)
    assert not Alert.objects.filter(pk__in=[second.pk, third.pk], acknowledged_at=None).exists()
    assert 'data-count="0"' in text(admin_client.get("/budgets/alerts/badge"))


# --- the cost dashboard's numbers ---------------------------------------------------------------------


def _usage(when: dt.datetime, **fields) -> UsageRecord:
    base = {"agent": "alpha", "session_id": "s-1", "model": "gpt-4o", "operation": "planning"}
    return ledger.record_usage({**base, **fields}, now=when)


def test_cost_data_adds_the_unrolled_tail_to_the_rollups_without_double_counting(admin_client):
    now = timezone.now()
    two_days = now - dt.timedelta(days=2)
    yesterday = now - dt.timedelta(days=1)
    old = now - dt.timedelta(days=40)  # outside the 30-day window
    rolled = [
        _usage(two_days, input_tokens=1000, output_tokens=500),  # gpt-4o: 0.0025 + 0.005 = 0.0075
        _usage(yesterday, model="gpt-4o-mini", operation="response", input_tokens=2000, output_tokens=1000),
        _usage(yesterday, agent="beta", session_id="s-2", input_tokens=400, output_tokens=100, cached_tokens=200),
        _usage(old, input_tokens=99_999, output_tokens=99_999),
    ]
    assert rollups.roll_up_usage() == 4
    tail = [
        _usage(now - dt.timedelta(minutes=5), input_tokens=100, output_tokens=100),  # same session s-1
        _usage(now - dt.timedelta(minutes=1), agent="gamma", session_id="s-3", operation="response", input_tokens=10),
        _usage(now, cached=True, input_tokens=300, output_tokens=30),  # a cache hit: $0
    ]
    assert UsageRecord.objects.filter(rolled_up=False).count() == 3
    data = admin_client.get("/costs/data.json").json()

    in_window = [r for r in rolled + tail if r.created_at >= queries.window_start(now)]
    expected_usd = sum((r.cost_usd for r in in_window), Decimal(0))
    assert data["totals"]["usd"] == pytest.approx(float(expected_usd))
    assert data["totals"]["calls"] == len(in_window) == 6
    assert data["totals"]["tokens"] == sum(r.input_tokens + r.output_tokens for r in in_window)
    assert data["totals"]["cached_tokens"] == 200
    assert len(data["days"]) == 30 and data["days"][-1] == now.astimezone(dt.UTC).date().isoformat()

    def per_day(model: str) -> dict[str, float]:
        series = next(s for s in data["spend_by_day"] if s["model"] == model)
        return {day: usd for day, usd in zip(data["days"], series["usd"], strict=True) if usd}

    def expected_per_day(model: str) -> dict[str, float]:
        out: dict[str, Decimal] = {}
        for r in in_window:
            if r.model == model and r.cost_usd:
                day = r.created_at.astimezone(dt.UTC).date().isoformat()
                out[day] = out.get(day, Decimal(0)) + r.cost_usd
        return {day: pytest.approx(float(v)) for day, v in out.items()}

    assert per_day("gpt-4o") == expected_per_day("gpt-4o")
    assert per_day("gpt-4o-mini") == expected_per_day("gpt-4o-mini")
    agents = {row["agent"]: row for row in data["by_agent"]}
    assert set(agents) == {"alpha", "beta", "gamma"}
    assert agents["alpha"]["calls"] == 4
    assert agents["alpha"]["usd"] == pytest.approx(
        float(sum((r.cost_usd for r in in_window if r.agent == "alpha"), Decimal(0)))
    )
    operations = {row["operation"]: row["calls"] for row in data["by_operation"]}
    assert operations == {"planning": 4, "response": 2}

    sessions = {row["session_id"]: row for row in data["top_sessions"]}
    s1 = [r for r in in_window if r.session_id == "s-1"]
    assert sessions["s-1"]["calls"] == len(s1) == 4  # 2 rolled + 2 in the tail, each once
    assert sessions["s-1"]["usd"] == pytest.approx(float(sum((r.cost_usd for r in s1), Decimal(0))))
    assert sessions["s-3"]["calls"] == 1
    assert [row["session_id"] for row in data["top_sessions"]] == sorted(
        sessions, key=lambda s: (-sessions[s]["usd"], s)
    )

    # a second read gives the same numbers
    assert admin_client.get("/costs/data.json").json()["totals"] == data["totals"]
    # rolling the tail up changes nothing on the dashboard
    assert rollups.roll_up_usage() == 3
    again = admin_client.get("/costs/data.json").json()
    for key in ("totals", "spend_by_day", "by_agent", "by_operation", "tokens_by_day", "top_sessions"):
        assert again[key] == data[key], key


def test_burn_rate_forecast_in_the_budget_time_zone():
    now = dt.datetime(2025, 3, 10, 8, 0, tzinfo=dt.UTC)  # 09:00 in Berlin (CET)
    berlin = make_budget("Berlin day", timezone="Europe/Berlin", limit_tokens=100_000)
    make_budget("Slow day", limit_tokens=10_000_000)
    make_budget("Monthly", period="month", limit_tokens=1_000)  # not a day budget: no forecast
    # 10,000 tokens in the last hour, 10,000 earlier today: 80,000 left at 10,000 tokens/h → 8 h → 16:00 UTC
    _usage(now - dt.timedelta(minutes=30), input_tokens=8_000, output_tokens=2_000)
    _usage(now - dt.timedelta(hours=3), input_tokens=10_000)
    found = {f.budget: f for f in queries.forecasts(now)}
    assert set(found) == {"Berlin day", "Slow day"}
    runs_out = found["Berlin day"]
    assert runs_out.state == "runs_out" and runs_out.runs_out_local == "17:00"
    assert runs_out.runs_out_at == dt.datetime(2025, 3, 10, 16, 0, tzinfo=dt.UTC).isoformat()
    assert runs_out.message == "Berlin day: at the current rate the daily budget runs out at 17:00 (Europe/Berlin)"
    assert found["Slow day"].state == "ok" and "does not run out today" in found["Slow day"].message
    assert berlin.timezone == "Europe/Berlin"

    exhausted = make_budget("Tiny day", limit_tokens=100, hard_stop=False)
    _usage(now - dt.timedelta(minutes=1), input_tokens=500)
    assert {f.budget: f for f in queries.forecasts(now)}["Tiny day"].state == "exhausted"
    assert exhausted.pk


def test_admin_lists_every_budget_model_and_saves_prices_through_the_action():
    client = client_for(ROOT)
    make_budget("Admin sees me", limit_tokens=100_000)
    for model in (
        "modelprice",
        "budget",
        "budgetcounter",
        "reservation",
        "usagerecord",
        "hourlyusage",
        "sessionusage",
        "alert",
        "alertsettings",
        "webhook",
        "webhookdelivery",
    ):
        assert client.get(f"/admin/budgets/{model}/").status_code == 200, model
    when = timezone.now() + dt.timedelta(days=2)
    response = client.post(
        "/admin/budgets/modelprice/add/",
        {
            "model": "gpt-admin",
            "input_per_1k": "0.1",
            "output_per_1k": "0.2",
            "cached_input_per_1k": "",
            "effective_from_0": when.strftime("%Y-%m-%d"),
            "effective_from_1": when.strftime("%H:%M:%S"),
            "note": "via admin",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = ModelPrice.objects.get(model="gpt-admin")
    assert row.created_by == "root" and row.note == "via admin"
    # existing price rows and the ledger are read-only
    assert client.post(f"/admin/budgets/modelprice/{row.pk}/change/", {"model": "x"}).status_code == 403
    assert client.get("/admin/budgets/usagerecord/add/").status_code == 403
