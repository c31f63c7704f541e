"""The Django admin speaks the reader's language too (issue 18: every page translatable): for every model
registered in the admin, its list and its form (add, or the row's page for one-row and read-only models)
render in Chinese with no English word a reader would see, and in English with no Chinese.

Django translates its own chrome; these pages check ours: model and field names, fieldset titles, filters,
actions, column titles, help texts and choices. What is never translated is left out: the rows' data (made
here with machine-like values, or listed in DATA), product names (``english_words``' allow-list), and the
permission names Django stores in English in the database when it migrates."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from agentops.config.models import FallbackRule, ModelRoute, Provider, RuntimeSettings
from agentops.keys import actions as key_actions
from agentops.runs.actions import agents as agent_actions
from budgets.models import (
    Alert,
    AlertSettings,
    Budget,
    BudgetCounter,
    HourlyUsage,
    ModelPrice,
    Reservation,
    SessionUsage,
    UsageRecord,
    Webhook,
    WebhookDelivery,
)
from review.models import ChatSettings, EscalationPolicy, MailDelivery, PolicyChange, ReviewerProfile
from tests.fixtures.factories import make_budget, make_escalation, seed_prices
from tests.fixtures.people import ROOT, client_for
from tests.fixtures.untranslated import chinese_in, english_words, page_texts

# Words that stay as they are on a Chinese admin page: the rows' own (the cast's names, the role groups, the
# seed's provider), a language named in itself, names of other products, of the pages of Slack's app settings
# and of keys (Django's "hold down Control, or Command on a Mac"), and machine values shown as they are: an
# error class, operation names, the seed's rejected phrases, API key scopes, a ledger row's sources, an
# escalation's source and kind, an audit event, the priorities a reviewer types, a key of an escalation's context.
DATA = frozenset({"root", "reviewer", "expert", "simulated", "English"})
PRODUCTS = frozenset({"Django", "Anthropic", "Messages", "Responses", "Python", "Basic", "Information", "App"})
PRODUCTS |= {"Credentials", "Control", "Command", "Mac"}
MACHINE = frozenset({"Timeout", "planning", "classify", "response", "don't", "know", "error", "runs", "admin"})
MACHINE |= {"api", "gateway", "seq", "run", "tool", "created", "high", "medium", "low", "suggestions"}
ALLOWED = DATA | PRODUCTS | MACHINE
PLACEHOLDER = re.compile(r"\{\w+\}")  # "may use {0}, {1} or {name}": template syntax
# Django's permission names ("Can add escalation") are rows written in English at migrate time.
PERMISSIONS = ('name="permissions"', 'name="user_permissions"')


@pytest.fixture
def rows(db):
    """One row of every registered model, with machine-like values (identifiers read the same in every
    language), so the list pages show rows and the read-only models have a page to open."""
    now = timezone.now()
    # the migrations' seed rows carry names and notes an admin typed in English (data): make our own instead
    Budget.objects.all().delete()
    FallbackRule.objects.all().delete()
    ModelPrice.objects.all().delete()
    agent = agent_actions.ensure_agent("t-approval")
    escalation = make_escalation(agent, arguments={"to": "t-to"}, context={}, rule="t-rule")
    root = ROOT.user()
    ReviewerProfile.objects.create(user=root, teams="t-team")
    MailDelivery.objects.create(escalation=escalation, user=root, notice="new", queue="reviewers", sent_at=now)
    PolicyChange.objects.create(
        kind="applied", suggestion="approve", agent=agent, agent_name=agent.name, operation="send_note", actor=root
    )
    EscalationPolicy.objects.create(agent=agent, operation="t-op", sensitive_prefixes="t-word")
    ChatSettings.objects.create(
        webhook_url="https://hooks.slack.com/services/T0/B0/x-1", signing_secret="0123456789abcdef0123"
    )
    provider = Provider.objects.create(name="t-provider", kind="simulated")
    ModelRoute.objects.create(operation="t-route", primary_provider=provider, primary_model="gpt-4o-mini")
    FallbackRule.objects.create(name="t-rule", pattern="t-pattern", answer="t-answer")
    RuntimeSettings.objects.get_or_create(pk=1)
    key_actions.create_api_key(agent.name, scopes=["runs"], name="t-key", created_by="root")
    seed_prices()
    budget = make_budget("t-budget", limit_tokens=1000)
    BudgetCounter.objects.create(budget=budget, subject="t-subject", period_start=now, spent_tokens=10)
    Reservation.objects.create(agent=agent.name, model="gpt-4o", operation="t-op", tokens=5, usd=0, expires_at=now, created_at=now)  # fmt: skip
    UsageRecord.objects.create(agent=agent.name, model="gpt-4o", operation="t-op", input_tokens=3, created_at=now)
    HourlyUsage.objects.create(hour=now, agent=agent.name, model="gpt-4o", operation="t-op", calls=1)
    SessionUsage.objects.create(day=now.date(), session_id="t-session", agent=agent.name, calls=1, tokens=3)
    AlertSettings.current()
    alert = Alert.objects.create(kind="test", message="t-message", dedup_key="t-dedup", created_at=now, budget=budget)
    webhook = Webhook.objects.create(name="t-webhook", url="https://hooks.slack.com/services/T0/B0/x-2")
    WebhookDelivery.objects.create(webhook=webhook, alert=alert, status="failed", created_at=now, updated_at=now)
    attempt = {"user_agent": "t-agent", "ip_address": "192.0.2.1", "username": "t-user", "path_info": "/admin/login/"}
    AccessAttempt.objects.create(**attempt, http_accept="t-accept", get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**attempt, http_accept="t-accept", logout_time=now + timedelta(minutes=1))
    AccessFailureLog.objects.create(**attempt, http_accept="t-accept", locked_out=False)
    assert Decimal(0) == Reservation.objects.get().usd  # every row saved (a typo above would fail here first)


def admin_pages() -> list[str]:
    """Every registered model's list page and its form: the add form when an admin may add one, and the page
    of its first row (the form of a one-row model, the read-only view of a ledger row)."""
    request = RequestFactory().get("/admin/")
    request.user = ROOT.user()
    pages = []
    for model, model_admin in admin.site._registry.items():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{name}_changelist"))
        if model_admin.has_add_permission(request):
            pages.append(reverse(f"{name}_add"))
        first = model._default_manager.order_by("pk").first()
        assert first is not None, f"no {model._meta.label} row to open: add one in the rows fixture"
        pages.append(reverse(f"{name}_change", args=[first.pk]))
    return pages


def texts_of(client, path: str, language: str) -> list[str]:
    response = client.get(path, headers={"accept-language": language})
    assert response.status_code == 200, f"{path} answered {response.status_code} in {language}"
    html = response.content.decode()
    for marker in PERMISSIONS:  # the permission pickers' options: database rows (see above)
        html = html.replace(marker, f'{marker} data-agent-content=""')
    texts = [PLACEHOLDER.sub("", text) for text in page_texts(html)]
    # a JSON value (an escalation's arguments, an audit event's data) is data, whatever its keys say
    return [text for text in texts if not (text[:1] in "{[" and text[-1:] in "}]")]


@pytest.mark.django_db
def test_every_admin_page_is_in_chinese_for_a_chinese_reader(rows):
    client = client_for(ROOT)
    # django-axes names its rows in English f-strings ("Attempted Access: <time>"): its rows' names are data
    axes_rows = [str(row) for model in (AccessAttempt, AccessLog, AccessFailureLog) for row in model.objects.all()]
    allowed = ALLOWED | {word for word, _text in english_words(axes_rows)} | {"unknown"}  # path "<unknown>"
    found = {}
    for path in admin_pages():
        words = sorted({word for word, _text in english_words(texts_of(client, path, "zh-Hans"))} - allowed)
        if words:
            found[path] = words
    assert not found, "English words on Chinese admin pages:\n" + "\n".join(f"{p}: {w}" for p, w in found.items())


@pytest.mark.django_db
def test_every_admin_page_is_in_english_for_an_english_reader(rows):
    client = client_for(ROOT)
    # the language choices name each language in itself (简体中文)
    found = {
        path: chinese_in([t for t in texts_of(client, path, "en-US") if t != "简体中文"]) for path in admin_pages()
    }
    found = {path: texts for path, texts in found.items() if texts}
    assert not found, f"Chinese on English admin pages: {found}"
