"""The queue at scale through the Django test client (issue 18): pages and their count, free-text search
(operation, arguments, session, agent; Chinese; % and _ taken literally), sort orders, per-team queues and
the team default, the assignee filter, saved views, the deadline-soon badge, bad parameters as form errors."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone, translation
from django.utils.formats import number_format

from agentops.runs.actions import agents as agent_actions
from review import actions as review
from review import queries
from review.models import PRIORITY_ORDER, Escalation, ReviewerProfile, SavedFilter
from tests.fixtures.factories import make_escalation
from tests.fixtures.live import first_event
from tests.fixtures.people import ALICE, BOB, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(alice):
    return client_for(ALICE)


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-escalation="(\d+)"', html)]


def ids(client, **params) -> list[int]:
    response = client.get("/review/", params)
    assert response.status_code == 200, response.status_code
    return row_ids(response.content.decode())


def aged(escalation: Escalation, minutes: float) -> Escalation:
    Escalation.objects.filter(pk=escalation.pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
    return escalation


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- pages and the count -----------------------------------------------------------------------------
def test_pages_cut_the_queue_and_keep_the_count(alice, monkeypatch):
    monkeypatch.setattr(queries, "PAGE_SIZE", 5)
    made = [aged(make_escalation(operation=f"op_{n:02d}"), 60 - n) for n in range(12)]  # oldest first
    expected = [e.pk for e in made]

    first = alice.get("/review/").content.decode()
    assert row_ids(first) == expected[:5]
    assert "1–5 of 12" in text_of(first) and "page 1 of 3" in text_of(first)
    assert 'id="queue-count" data-count="12">12<' in first
    assert 'rel="next" href="/review/?queue=reviewers&amp;team=all&amp;page=2"' in first
    assert 'aria-disabled="true">Previous<' in first  # nowhere to go back to on the first page
    assert row_ids(alice.get("/review/", {"page": 2}).content.decode()) == expected[5:10]
    last = alice.get("/review/", {"page": 3}).content.decode()
    assert row_ids(last) == expected[10:] and "11–12 of 12" in text_of(last)
    assert 'aria-disabled="true">Next<' in last and 'aria-disabled="true">Last<' in last
    # past the end: the last page; not a number or below 1: an error on the field, the first page
    assert row_ids(alice.get("/review/", {"page": 99}).content.decode()) == expected[10:]
    for bad in ("0", "abc", "-1", "9" * 30):
        html = alice.get("/review/", {"page": bad}).content.decode()
        assert row_ids(html) == expected[:5] and 'id="filter-errors"' in html, bad
    # an item decided elsewhere leaves the page and the count (the live refresh re-reads this)
    review.decide(made[0].pk, BOB.user(), "approved")
    assert "1–5 of 11" in text_of(alice.get("/review/").content.decode())


def test_the_count_is_localised_and_a_page_reads_only_its_rows(alice, django_assert_max_num_queries):
    agent = agent_actions.ensure_agent("t-approval")
    deadline = timezone.now() + timedelta(minutes=10)
    Escalation.objects.bulk_create(
        Escalation(
            agent=agent,
            operation="send_note",
            arguments={"n": n},
            reason="sensitive_operation",
            priority="low",
            priority_rank=PRIORITY_ORDER["low"],
            deadline_at=deadline,
        )
        for n in range(1234)
    )
    with django_assert_max_num_queries(20):  # however many items: a count, a page of keys, its rows
        html = alice.get("/review/").content.decode()
    assert len(row_ids(html)) == queries.PAGE_SIZE == 50
    assert "1–50 of 1,234" in text_of(html) and "page 1 of 25" in text_of(html)
    chinese = alice.get("/review/", headers={"accept-language": "zh-hans"}).content.decode()
    with translation.override("zh-hans"):  # the active language's grouping and separator (Django's zh_Hans formats)
        in_chinese = number_format(1234, force_grouping=True)
    assert 'lang="zh-hans"' in chinese and f'data-count="1234">{in_chinese}<' in chinese
    assert "1–50 / 共 " + in_chinese + " 项" in text_of(chinese)
    assert len(row_ids(alice.get("/review/", {"page": 25}).content.decode())) == 34


# --- search -----------------------------------------------------------------------------------------
def test_search_reads_operation_arguments_session_and_agent(alice):
    refund = make_escalation(agent="support-refund", operation="send_refund", arguments={"order": "A-77"})
    note = make_escalation(operation="send_note", session_id="sess-XYZ-1", arguments={"to": "ana@example.com"})
    chinese = make_escalation(operation="发送退款", arguments={"备注": "客户要求退款 100%_全额"})
    research = make_escalation(agent="research", operation="search_kb", arguments={"q": "50% off_sale"})

    assert ids(alice, q="SEND_REFUND") == [refund.pk]  # case-insensitive
    assert ids(alice, q="a-77") == [refund.pk]  # inside the arguments' JSON
    assert ids(alice, q="sess-xyz") == [note.pk]  # the session id
    assert ids(alice, q="Support-Ref") == [refund.pk]  # the agent's name
    assert ids(alice, q="退款") == [chinese.pk]
    assert ids(alice, q="要求退款 100") == [chinese.pk]  # mixed script
    assert ids(alice, q="100%_全") == [chinese.pk]
    assert ids(alice, q="%") == sorted([chinese.pk, research.pk])  # % is a character, not a wildcard
    assert ids(alice, q="0%_") == [chinese.pk]  # _ too
    assert ids(alice, q="nothing like it") == []
    html = alice.get("/review/", {"q": "nothing like it"}).content.decode()
    assert "No open escalation matches these filters." in html


def test_bad_searches_are_form_errors_never_500(alice):
    item = make_escalation()
    for bad in ("a\x00b", "x" * 201):
        response = alice.get("/review/", {"q": bad})
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="filter-errors"' in html and row_ids(html) == [item.pk], bad
    assert "Null characters are not allowed." in alice.get("/review/", {"q": "a\x00b"}).content.decode()
    assert "at most 200 characters" in alice.get("/review/", {"q": "x" * 201}).content.decode()
    assert alice.get("/review/", {"q": "x" * 50_000}).status_code == 200
    assert ids(alice, q="   ") == [item.pk]  # blank after stripping: no search


# --- sort -------------------------------------------------------------------------------------------
def test_sort_orders(alice):
    low_old = aged(make_escalation(reason="max_retries_exceeded", priority="low", deadline_seconds=900), 30)
    high_new = aged(make_escalation(deadline_seconds=1200), 1)
    medium = aged(make_escalation(reason="low_confidence", priority="medium", deadline_seconds=60), 10)

    assert ids(alice) == [high_new.pk, medium.pk, low_old.pk]  # priority, then oldest (the default)
    assert ids(alice, sort="priority") == [high_new.pk, medium.pk, low_old.pk]
    assert ids(alice, sort="age") == [low_old.pk, medium.pk, high_new.pk]
    assert ids(alice, sort="-age") == [high_new.pk, medium.pk, low_old.pk]
    assert ids(alice, sort="deadline") == [medium.pk, low_old.pk, high_new.pk]
    html = alice.get("/review/", {"sort": "sideways"}).content.decode()
    assert 'id="filter-errors"' in html and row_ids(html) == [high_new.pk, medium.pk, low_old.pk]
    # the page links keep the sort
    assert 'value="deadline" selected' in alice.get("/review/", {"sort": "deadline"}).content.decode()


# --- teams and assignees --------------------------------------------------------------------------------
def test_a_reviewer_with_teams_sees_their_teams_and_the_teamless_by_default(alice):
    agent_actions.ensure_agent("pay-bot", team="payments")
    agent_actions.ensure_agent("help-bot", team="support")
    payments = make_escalation(agent="pay-bot")
    support = make_escalation(agent="help-bot")
    teamless = make_escalation(agent="t-approval")
    assert payments.team == "payments" and teamless.team == ""

    everything = sorted([payments.pk, support.pk, teamless.pk])
    assert sorted(ids(alice)) == everything  # no profile teams: every team
    ReviewerProfile.objects.create(user=ALICE.user(), teams="payments, risk")
    html = alice.get("/review/").content.decode()
    assert sorted(row_ids(html)) == sorted([payments.pk, teamless.pk])
    assert '<option value="mine" selected>My teams</option>' in html
    row = html[html.index(f'<tr data-escalation="{payments.pk}"') :].split("</tr>")[0]
    assert ">payments<" in row  # the team shows on the row
    assert sorted(ids(alice, team="all")) == everything  # the way to see all
    assert ids(alice, team="support") == [support.pk]
    assert ids(alice, team="risk") == []
    html = alice.get("/review/", {"team": "no-such-team"}).content.decode()
    assert 'id="filter-errors"' in html and sorted(row_ids(html)) == sorted([payments.pk, teamless.pk])
    # bob has no profile: every team, and no "My teams" choice
    bob_html = client_for(BOB).get("/review/").content.decode()
    assert sorted(row_ids(bob_html)) == everything and 'value="mine"' not in bob_html


def test_assignee_filter_and_the_assignee_on_the_row(alice):
    mine = make_escalation(operation="mine_op")
    bobs = make_escalation(operation="bobs_op")
    nobodys = make_escalation(operation="free_op")
    Escalation.objects.filter(pk=mine.pk).update(assigned_to=ALICE.user())
    Escalation.objects.filter(pk=bobs.pk).update(assigned_to=BOB.user())

    assert ids(alice, assignee="me") == [mine.pk]
    assert ids(alice, assignee="none") == [nobodys.pk]
    assert ids(alice, assignee="bob") == [bobs.pk]
    html = alice.get("/review/").content.decode()
    row = html[html.index(f'<tr data-escalation="{mine.pk}"') :].split("</tr>")[0]
    assert 'assignee-name">you</span>' in row and "Unassign" in row
    row = html[html.index(f'<tr data-escalation="{bobs.pk}"') :].split("</tr>")[0]
    assert ">bob</span>" in row
    html = alice.get("/review/", {"assignee": "<script>nobody</script>"}).content.decode()
    assert 'id="filter-errors"' in html and "No user is called &lt;script&gt;nobody&lt;/script&gt;" in html
    assert len(row_ids(html)) == 3


# --- the URL is the state -----------------------------------------------------------------------------
def test_htmx_refreshes_keep_page_filters_and_sort(alice, monkeypatch):
    monkeypatch.setattr(queries, "PAGE_SIZE", 2)
    made = [aged(make_escalation(operation=f"refund_{n}"), 30 - n) for n in range(5)]
    params = {"q": "refund", "sort": "age", "page": 2}
    fragment = alice.get("/review/", params, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<div id="queue-live"') and "<html" not in fragment
    assert row_ids(fragment) == [made[2].pk, made[3].pk]
    assert 'name="page" value="2" data-queue-page' in fragment  # what the next refresh sends
    assert 'href="/review/?q=refund&amp;queue=reviewers&amp;team=all&amp;sort=age&amp;page=3"' in fragment
    # the back button's history restore asks with htmx headers and gets the whole page
    restore = alice.get("/review/", params, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.content.decode() and row_ids(restore.content.decode()) == [made[2].pk, made[3].pk]


def test_saved_views_are_saved_listed_opened_and_deleted(alice):
    make_escalation()
    answer = alice.post(
        "/review/filters/", {"name": "Refunds 退款", "query": "q=refund&sort=deadline&page=4&evil=1&q=second"}
    )
    assert answer.status_code == 302 and answer["Location"] == "/review/?q=refund&sort=deadline"
    saved = SavedFilter.objects.get(user=ALICE.user())
    assert (saved.name, saved.query) == ("Refunds 退款", "q=refund&sort=deadline")
    html = alice.get(answer["Location"]).content.decode()
    assert 'href="/review/?q=refund&amp;sort=deadline" aria-current="true" data-agent-content>Refunds 退款</a>' in html
    assert "Saved this view as “Refunds 退款”." in html
    # the same name again replaces the view; another reviewer sees none of alice's
    alice.post("/review/filters/", {"name": "Refunds 退款", "query": "assignee=me"})
    assert list(SavedFilter.objects.values_list("query", flat=True)) == ["assignee=me"]
    bob = client_for(BOB)
    assert "Refunds" not in bob.get("/review/").content.decode()
    assert bob.post(f"/review/filters/{saved.pk}/delete").status_code == 404
    # bad input: a message, nothing saved
    assert alice.post("/review/filters/", {"name": "", "query": "q=x"}).status_code == 302
    assert alice.post("/review/filters/", {"name": "n" * 81, "query": "q=x"}).status_code == 302
    assert SavedFilter.objects.count() == 1
    assert alice.get("/review/filters/").status_code == 405
    answer = alice.post(f"/review/filters/{saved.pk}/delete", {"query": "q=refund"})
    assert answer.status_code == 302 and answer["Location"] == "/review/?q=refund"
    assert not SavedFilter.objects.exists()


def test_saved_views_are_bounded_per_reviewer(alice):
    for n in range(50):
        SavedFilter.objects.create(user=ALICE.user(), name=f"v{n}", query="")
    html = alice.post("/review/filters/", {"name": "one more", "query": "q=x"}, follow=True).content.decode()
    assert "You keep 50 saved views already; delete one first." in html
    assert SavedFilter.objects.count() == 50


# --- the reminder before the deadline -------------------------------------------------------------------
def test_items_near_their_deadline_carry_the_deadline_soon_badge(alice, settings):
    settings.REVIEW_REMINDER_SECONDS = 120
    soon = make_escalation(deadline_seconds=100)
    later = make_escalation(deadline_seconds=3600)
    assert review.due_for_reminder(now=timezone.now() + timedelta(seconds=80)) == [soon.pk]
    html = alice.get("/review/").content.decode()
    soon_row = html[html.index(f'<tr data-escalation="{soon.pk}"') :].split("</tr>")[0]
    later_row = html[html.index(f'<tr data-escalation="{later.pk}"') :].split("</tr>")[0]
    assert "reminded" in soon_row and "deadline soon" in soon_row
    assert "deadline soon" not in later_row


@pytest.mark.django_db(transaction=True)
def test_a_reminder_reaches_the_experts_only_page_live(alice, settings):
    """The experts' page listens on review.experts: an expert item's reminder is announced there too."""
    settings.REVIEW_REMINDER_SECONDS = 120
    expert_item = make_escalation(deadline_seconds=3600)
    review.escalate_to_expert(expert_item.pk, ALICE.user())
    Escalation.objects.filter(pk=expert_item.pk).update(deadline_at=timezone.now() + timedelta(seconds=100))
    Escalation.objects.filter(pk=expert_item.pk).update(escalated_at=timezone.now() - timedelta(seconds=300))

    message, reminded = first_event("review.experts", "escalation.reminded", review.due_for_reminder)
    assert reminded == [expert_item.pk]
    assert message["group"] == "review.experts" and message["data"] == {"escalation": expert_item.pk}
