"""Policy suggestions from decision history (review.suggestions) and the actions that apply, undo and dismiss
them (review.policy_actions): every threshold at its edge (19 vs 20 decisions, 97.9 % vs 98 %, a modification
just inside or just outside the latest 10), the value limit, auto-reject, rows that already cover a
suggestion, dismissals that last until new evidence, and the audited, exact undo."""

from __future__ import annotations

import pytest
from django.utils import translation

from agentops.config import actions as config_actions
from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from review import policy_actions
from review.models import EscalationPolicy, PolicyChange
from review.policy import evaluate
from review.suggestion_presenters import suggestion_views
from review.suggestions import Thresholds, find, limit_above
from tests.fixtures.factories import make_decisions
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db

SEED = Thresholds(min_decisions=20, approval_percent=98, recent=10)  # the settings' defaults


@pytest.fixture(autouse=True)
def _forget_rolled_back_policies():
    """This process caches policy rows: a rolled-back test's rows must not outlive it in that cache. Texts
    made outside a request are in English (a request in Chinese leaves its language active in the thread)."""
    translation.activate("en")
    yield
    config_source().invalidate()
    translation.activate("en")


@pytest.fixture
def agent(redis_client):
    """The runtime settings a transactional test's flush removed, and the agent whose history we build."""
    reseed_runtime()
    config_source().invalidate()
    return agent_actions.ensure_agent("t-approval")


def found(thresholds: Thresholds = SEED) -> list[tuple]:
    return [(f.evidence.agent, f.evidence.operation, f.kind, f.below, f.evidence.decisions) for f in find(thresholds)]


def save_policy(**fields) -> EscalationPolicy:
    row = EscalationPolicy(**fields)
    config_actions.save_runtime_object(row)
    config_source().invalidate()
    return row


def apply(agent, user, kind="approve", *, below=None, decisions=20, operation="send_note") -> PolicyChange:
    change = policy_actions.apply_suggestion(agent.pk, operation, kind, user, below=below, decisions=decisions)
    config_source().invalidate()  # this process at once (others within a second, through the version bump)
    return change


# --- the rules, at their edges ----------------------------------------------------------------------------
def test_nineteen_approvals_suggest_nothing_twenty_suggest_auto_approve(agent, alice):
    make_decisions("a" * 19, reviewer=alice)
    assert found() == []
    make_decisions("a", reviewer=alice)
    assert found() == [("t-approval", "send_note", "approve", None, 20)]  # no values: no limit


def test_the_approval_share_must_reach_98_percent(agent, alice):
    make_decisions("r" + "a" * 47, reviewer=alice)  # 47 of 48 approved: 97.9 %
    assert found() == []
    make_decisions("a", reviewer=alice)  # 48 of 49: 97.96 %
    assert found() == []
    make_decisions("a", reviewer=alice)  # 49 of 50: exactly 98 %
    [suggestion] = find(SEED)
    assert (suggestion.kind, suggestion.evidence.approved, suggestion.evidence.rejected) == ("approve", 49, 1)
    assert suggestion_views([suggestion])[0].rate == "98.0 %"


def test_a_modification_among_the_latest_ten_blocks_the_suggestion(agent, alice):
    make_decisions("a" * 40 + "m" + "a" * 9, reviewer=alice)  # 49 of 50 approved; the modification is 10th latest
    assert found() == []
    make_decisions("a", reviewer=alice)  # now the 11th latest: out of the window, and 50 of 51 approved
    [suggestion] = find(SEED)
    assert (suggestion.kind, suggestion.evidence.modified, suggestion.evidence.recent_changes) == ("approve", 1, 0)


def test_a_take_over_counts_as_not_approved_unchanged(agent, alice):
    make_decisions("a" * 19 + "t", reviewer=alice)
    assert found() == []


def test_the_value_limit_is_just_above_the_largest_approved_value(agent, alice):
    values = [10.0 * i for i in range(1, 20)] + [480.0]
    make_decisions("a" * 20, reviewer=alice, values=values)
    [suggestion] = find(SEED)
    assert suggestion.below == 490.0
    e = suggestion.evidence
    assert (e.valued, e.min_value, e.max_value, e.max_approved_value) == (20, 10.0, 480.0, 480.0)
    view = suggestion_views([suggestion])[0]
    assert view.title == "Auto-approve send_note for t-approval below value 490"
    assert "10 – 480 (largest approved: 480)" in view.values
    assert [d.pk for d in view.last] == sorted((d.pk for d in view.last), reverse=True) and len(view.last) == 5
    assert view.last[0].href == f"/review/{view.last[0].pk}/" and view.last[0].value == "480"


@pytest.mark.parametrize(
    ("largest", "limit"),
    [(480, 490), (500, 510), (1234, 1300), (0.7, 0.71), (7, 7.1), (99.5, 100), (9.99, 10), (0, 1), (None, None)],
)
def test_limit_above(largest, limit):
    assert limit_above(largest) == limit


def test_always_rejected_suggests_auto_reject(agent, alice):
    make_decisions("r" * 19 + "a", reviewer=alice)
    assert found() == []
    make_decisions("r" * 20, reviewer=alice, operation="delete_account")
    assert found() == [("t-approval", "delete_account", "reject", None, 20)]
    assert suggestion_views(find(SEED))[0].title == "Auto-reject delete_account for t-approval"


def test_each_agent_and_operation_is_counted_apart(agent, alice):
    make_decisions("a" * 10, reviewer=alice)
    make_decisions("a" * 10, reviewer=alice, operation="send_email")
    make_decisions("a" * 10, reviewer=alice, agent="t-other")
    assert found() == []
    assert found(Thresholds(10, 98, 10)) == [
        ("t-approval", "send_email", "approve", None, 10),
        ("t-approval", "send_note", "approve", None, 10),
        ("t-other", "send_note", "approve", None, 10),
    ]


# --- rows that cover a suggestion, dismissals --------------------------------------------------------------
def test_a_row_that_already_decides_that_way_hides_the_suggestion(agent, alice):
    make_decisions("a" * 20, reviewer=alice, values=[100.0] * 20)  # suggests below 110
    save_policy(agent=agent, auto_decision="approve", auto_approve_below=50)
    assert found() == [("t-approval", "send_note", "approve", 110.0, 20)]  # a higher limit is still news
    save_policy(agent=None, operation="send_note", auto_decision="approve")  # less specific: does not apply
    assert len(found()) == 1
    EscalationPolicy.objects.filter(agent=agent).update(auto_approve_below=110)
    assert found() == []


def test_a_dismissed_suggestion_stays_dismissed_until_ten_more_decisions(agent, alice, root):
    make_decisions("a" * 20, reviewer=alice)
    policy_actions.dismiss(agent.pk, "send_note", "approve", root, below=None, decisions=20)
    assert found() == []
    make_decisions("a" * 9, reviewer=alice)
    assert found() == []
    make_decisions("a", reviewer=alice)
    assert found() == [("t-approval", "send_note", "approve", None, 30)]


# --- apply, undo -------------------------------------------------------------------------------------------
def test_applying_creates_the_row_with_the_rules_that_applied_and_undo_deletes_it(agent, alice, root):
    agent_wide = save_policy(agent=agent, high_value_above=5000, sensitive_prefixes="send,purge", deadline_seconds=90)
    make_decisions("a" * 20, reviewer=alice, values=[10.0 * i for i in range(1, 21)])  # largest 200
    change = apply(agent, root, below=210.0)

    row = EscalationPolicy.objects.get(agent=agent, operation="send_note")
    assert (row.auto_decision, row.auto_approve_below, row.enabled) == ("approve", 210.0, True)
    assert (row.high_value_above, row.sensitive_prefixes, row.deadline_seconds) == (5000, "send,purge", 90)
    assert (change.kind, change.suggestion, change.actor, change.before) == ("applied", "approve", root, None)
    assert change.after == policy_actions.snapshot(row) and change.policy == row
    assert (change.agent_name, change.operation) == ("t-approval", "send_note")
    evidence = change.evidence
    assert (evidence["decisions"], evidence["approved"], evidence["max_approved_value"], evidence["below"]) == (
        20,
        20,
        200.0,
        210.0,
    )
    assert evidence["thresholds"] == {"min_decisions": 20, "approval_percent": 98, "recent": 10}

    below = evaluate("t-approval", "send_note", value=209.5)
    assert (below.escalate, below.reject, below.reason) == (False, False, "auto_approved")
    assert f"policy #{row.pk} (t-approval/send_note)" in below.rule
    assert evaluate("t-approval", "send_note", value=210).reason == "sensitive_operation"  # at the limit: the rules
    assert evaluate("t-approval", "send_note").reason == "sensitive_operation"  # no value cannot show it is below
    assert found() == []  # covered now

    undone = policy_actions.undo(change.pk, root)
    config_source().invalidate()
    assert not EscalationPolicy.objects.filter(agent=agent, operation="send_note").exists()
    assert EscalationPolicy.objects.filter(pk=agent_wide.pk).exists()
    assert (undone.kind, undone.undoes, undone.actor, undone.before, undone.after) == (
        "undone",
        change,
        root,
        change.after,
        None,
    )
    assert evaluate("t-approval", "send_note", value=100).reason == "sensitive_operation"
    assert found() == [("t-approval", "send_note", "approve", 210.0, 20)]  # back, since nothing covers it
    with pytest.raises(policy_actions.UndoRefused, match="undone already"):
        policy_actions.undo(change.pk, root)


def test_undo_restores_an_existing_row_exactly(agent, alice, root):
    existing = save_policy(agent=agent, operation="delete_account", high_value_above=300, low_confidence_below=0.5)
    before = policy_actions.snapshot(EscalationPolicy.objects.get(pk=existing.pk))
    make_decisions("r" * 20, reviewer=alice, operation="delete_account")
    change = apply(agent, root, "reject", operation="delete_account")
    assert change.before == before
    rejected = evaluate("t-approval", "delete_account", value=1)
    assert (rejected.escalate, rejected.reject, rejected.reason) == (False, True, "auto_rejected")
    assert f"auto-reject · policy #{existing.pk} (t-approval/delete_account)" == rejected.rule

    policy_actions.undo(change.pk, root)
    config_source().invalidate()
    assert policy_actions.snapshot(EscalationPolicy.objects.get(pk=existing.pk)) == before
    assert evaluate("t-approval", "delete_account").reason == "sensitive_operation"


def test_undo_refuses_when_the_row_was_edited_since(agent, alice, root):
    make_decisions("a" * 20, reviewer=alice)
    change = apply(agent, root)
    row = EscalationPolicy.objects.get(agent=agent, operation="send_note")
    row.max_retries = 7
    config_actions.save_runtime_object(row)
    with pytest.raises(policy_actions.UndoRefused, match="edited after this change"):
        policy_actions.undo(change.pk, root)
    assert EscalationPolicy.objects.get(pk=row.pk).max_retries == 7
    assert not PolicyChange.objects.filter(kind="undone").exists()


def test_applying_what_the_page_no_longer_shows_is_refused(agent, alice, root):
    make_decisions("a" * 20, reviewer=alice, values=[5.0] * 20)
    with pytest.raises(policy_actions.SuggestionChanged, match="New decisions arrived"):
        apply(agent, root, below=5.1, decisions=19)
    with pytest.raises(policy_actions.SuggestionChanged, match="New decisions arrived"):
        apply(agent, root, below=6.0)
    with pytest.raises(policy_actions.SuggestionChanged, match="no longer stands"):
        apply(agent, root, "reject")
    assert not EscalationPolicy.objects.filter(agent=agent).exists() and not PolicyChange.objects.exists()
