"""/review/suggestions/: who may open it (people who may edit escalation policies), the evidence it shows,
and its buttons — apply, dismiss, undo (with its confirmation) — as a browser posts them (CSRF enforced)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import translation

from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from review.models import EscalationPolicy, PolicyChange, SuggestionDismissal
from tests.fixtures.factories import make_decisions
from tests.fixtures.people import PASSWORD, ROOT
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db

PAGE = "/review/suggestions/"


@pytest.fixture(autouse=True)
def _forget_rolled_back_policies():
    """This process caches policy rows: a rolled-back test's rows must not outlive it in that cache. Texts
    made outside a request are in English (a request in Chinese leaves its language active in the thread)."""
    translation.activate("en")
    yield
    config_source().invalidate()
    translation.activate("en")


@pytest.fixture
def history(redis_client, alice):
    """20 approvals of send_note (values 10 … 480: the limit is 490) and 20 rejections of delete_account."""
    reseed_runtime()
    config_source().invalidate()
    make_decisions("a" * 20, reviewer=alice, values=[10.0 * i for i in range(1, 20)] + [480.0])
    make_decisions("r" * 20, reviewer=alice, operation="delete_account")
    return agent_actions.ensure_agent("t-approval")


def signed_in(person) -> Client:
    """A client that signs in through the login form and enforces CSRF, like a browser."""
    person.user()
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]*)"', page.content.decode()).group(1)
    assert (
        client.post(
            "/accounts/login/", {"username": person.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
        ).status_code
        == 302
    )
    return client


def forms_of(html: str, action: str) -> list[dict]:
    """The hidden fields of each form posting to ``action`` on the page."""
    found = []
    for form in re.findall(rf'<form method="post" action="{re.escape(action)}">(.*?)</form>', html, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
        fields.pop("csrfmiddlewaretoken", None)
        found.append(fields)
    return found


def test_only_people_who_may_edit_policies_open_or_post(history, alice, charlie):
    for person in (alice, charlie):
        client = Client()
        client.force_login(person)
        assert client.get(PAGE).status_code == 403
        form = {"agent": history.pk, "operation": "delete_account", "kind": "reject", "below": "", "decisions": 20}
        assert client.post("/review/suggestions/apply", form).status_code == 403
        assert client.post("/review/suggestions/dismiss", form).status_code == 403
    assert not EscalationPolicy.objects.filter(agent=history).exists() and not SuggestionDismissal.objects.exists()
    assert Client().get(PAGE)["Location"].startswith("/accounts/login/")
    reviewer = Client()
    reviewer.force_login(alice)
    assert "Policy suggestions" not in reviewer.get("/review/").content.decode()


def test_the_page_shows_each_suggestion_with_its_evidence(history):
    root = signed_in(ROOT)
    assert 'id="suggestions-link" href="/review/suggestions/"' in root.get("/review/").content.decode()
    html = root.get(PAGE).content.decode()
    assert "Auto-approve send_note for t-approval below value 490" in html
    assert "20 decisions: 20 approved unchanged, 0 modified, 0 taken over, 0 rejected" in html
    assert "100.0 % · the latest 10: all approved unchanged" in html
    assert "20 of 20 with a value: 10 – 480 (largest approved: 480)" in html
    assert "Auto-reject delete_account for t-approval" in html
    assert "no decision carried a value" in html
    links = re.findall(r'<li><a href="/review/(\d+)/">#\1</a>', html)
    assert len(links) == 10  # the 5 latest decisions of each
    assert (
        forms_of(html, "/review/suggestions/apply")
        == [
            {"agent": str(history.pk), "operation": "delete_account", "kind": "reject", "below": "", "decisions": "20"},
            {
                "agent": str(history.pk),
                "operation": "send_note",
                "kind": "approve",
                "below": "490.0",
                "decisions": "20",
            },
        ]
        or len(forms_of(html, "/review/suggestions/apply")) == 2
    )


def test_apply_then_undo_with_its_confirmation(history, root):
    client = signed_in(ROOT)
    html = client.get(PAGE).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]*)"', html).group(1)
    approve = next(f for f in forms_of(html, "/review/suggestions/apply") if f["kind"] == "approve")
    assert client.post("/review/suggestions/apply", approve).status_code == 403  # no CSRF token
    answer = client.post("/review/suggestions/apply", {**approve, "csrfmiddlewaretoken": token}, follow=True)
    page = answer.content.decode()
    assert "Applied: Auto-approve send_note for t-approval below value 490." in page
    row = EscalationPolicy.objects.get(agent=history, operation="send_note")
    assert (row.auto_decision, row.auto_approve_below) == ("approve", 490.0)
    change = PolicyChange.objects.get(kind="applied")
    assert change.actor == root and change.after["auto_approve_below"] == 490.0
    assert f'href="/admin/review/escalationpolicy/{row.pk}/change/"' in page
    listed = page.split('id="suggestion-list"')[1].split('id="applied-changes"')[0]
    assert "Auto-reject delete_account" in listed and "below value 490" not in listed  # no longer suggested
    assert f'href="/review/suggestions/changes/{change.pk}/undo"' in page

    confirm = client.get(f"/review/suggestions/changes/{change.pk}/undo").content.decode()
    assert "Undoing deletes the policy row this suggestion created." in confirm
    assert "<td>auto_approve_below</td><td>490.0</td><td>—</td>" in confirm.replace(' class="mono"', "")
    assert EscalationPolicy.objects.filter(pk=row.pk).exists()  # a GET changes nothing
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]*)"', confirm).group(1)
    done = client.post(f"/review/suggestions/changes/{change.pk}/undo", {"csrfmiddlewaretoken": token}, follow=True)
    assert "Undone: the policy row is back as it was before." in done.content.decode()
    assert not EscalationPolicy.objects.filter(pk=row.pk).exists()
    assert PolicyChange.objects.get(kind="undone").undoes == change
    again = client.post(f"/review/suggestions/changes/{change.pk}/undo", {"csrfmiddlewaretoken": token}, follow=True)
    assert "This change was undone already." in again.content.decode()


def test_dismiss_and_bad_input(history, root):
    client = Client()
    client.force_login(root)
    html = client.get(PAGE).content.decode()
    reject = next(f for f in forms_of(html, "/review/suggestions/dismiss") if f["kind"] == "reject")
    answer = client.post("/review/suggestions/dismiss", reject, follow=True)
    assert "Dismissed." in answer.content.decode()
    assert "Auto-reject delete_account" not in answer.content.decode()
    assert SuggestionDismissal.objects.get().dismissed_by == root

    for bad in (
        {"agent": "x", "operation": "send_note", "kind": "approve", "decisions": 20},
        {"agent": 999_999, "operation": "send_note", "kind": "approve", "below": "490.0", "decisions": 20},
        {"agent": history.pk, "operation": "send_note", "kind": "maybe", "decisions": 20},
        {"agent": history.pk, "operation": "send_note", "kind": "approve", "below": "nan", "decisions": 20},
    ):
        answer = client.post("/review/suggestions/apply", bad, follow=True)
        assert answer.status_code == 200 and 'class="error"' in answer.content.decode(), bad
    assert client.get("/review/suggestions/changes/999999/undo").status_code == 404
    assert not EscalationPolicy.objects.filter(agent=history).exists()


def test_agent_supplied_names_are_escaped(redis_client, alice, root):
    reseed_runtime()
    make_decisions("a" * 20, reviewer=alice, agent="t-approval", operation="<b>send</b>_note")
    client = Client()
    client.force_login(root)
    html = client.get(PAGE).content.decode()
    assert "Auto-approve &lt;b&gt;send&lt;/b&gt;_note for t-approval" in html and "<b>send</b>" not in html


def test_the_page_in_chinese(history, root):
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    client.force_login(root)
    html = client.get(PAGE).content.decode()
    assert "<h1>策略建议</h1>" in html
    assert "自动批准 t-approval 的 send_note，金额低于 490" in html
    assert "20 个决定：20 个原样批准，0 个已修改，0 个已接管，0 个已拒绝" in html
    assert "最近 10 个：全部原样批准" in html and "自动拒绝 t-approval 的 delete_account" in html
