"""The authorization matrix of the browser pages and exports: every page route × every role, through the real
uvicorn server (the /api/v1 matrix is tests/integration/api/test_authz_matrix.py).

Cast (signed in through the login form): nobody signed in; a user with no role; a reviewer; an expert; a
budget admin; an agent admin; a superuser. A reviewer works the reviewers' queue and reads runs; an expert also
owns the expert queue; a budget admin owns budgets and costs; an agent admin the agents; only a superuser opens ops.

Expected: signed out → the login page; a role without the page's section → 403; with it → no 403 and no 5xx.
An escalation in the expert queue stays with experts (issue 14, item 11): a non-expert gets 403 on its pages,
and its arguments, context, the expert's comment and its outcome appear in nothing a non-expert gets — not
/review/export.jsonl, not /review/stats/, not /runs/<id>/ or the timeline on another item's page.

Data-driven: the routes come from the URL resolver, so a page added later is covered without editing this
file; a route whose section (or whose path parameter) this file does not know fails loudly: add it below.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from agentops.keys import actions as key_actions
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Run, Step
from budgets.actions import prices as price_actions
from budgets.actions import webhooks as webhook_actions
from budgets.models import ModelPrice, Webhook
from review import actions as review
from review.models import Escalation
from tests.fixtures.factories import make_budget
from tests.fixtures.people import ADA, ALICE, BEA, CHARLIE, ERIN, ROOT, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

MARK = "expert-only-secret"  # in the expert item's arguments, context, comment and outcome
EXPERT_OPERATION = "wire_funds_abroad"  # the expert item's operation (its stats row)
REVIEWER_MARK = "reviewer-item-note"  # in the reviewers' item: a reviewer does see it

# The roles, each played by one of the cast (tests/fixtures/people.py); who opens which section is
# agentops/accounts/roles.py SECTIONS.
CAST = {
    "anonymous": None,
    "no-role": CHARLIE,
    "reviewer": ALICE,
    "expert": ERIN,
    "budget-admin": BEA,
    "agent-admin": ADA,
    "superuser": ROOT,
}
SECTION_ROLES = {
    "queue": {"reviewer", "expert", "superuser"},
    "runs": {"reviewer", "expert", "superuser"},
    "budgets": {"budget-admin", "superuser"},
    "costs": {"budget-admin", "superuser"},
    "agents": {"agent-admin", "superuser"},
    "ops": {"superuser"},
    "policies": {"superuser"},  # review.change_escalationpolicy: the policy suggestions (superusers by default)
    "home": {"reviewer", "expert", "budget-admin", "agent-admin", "superuser"},
}
# The section of each page route, by prefix (first match wins).
SECTIONS = [
    ("review/suggestions/", "policies"),
    ("review/", "queue"),
    ("runs/", "runs"),
    ("budgets/", "budgets"),
    ("costs/", "costs"),
    ("agents/", "agents"),
    ("ops/", "ops"),
]
# Not browser pages: machine endpoints (own matrices and tests; hooks/ are signed callbacks, test_chat.py), the
# sign-in pages, the admin (staff only), the language switch and the words of the page scripts (open to everyone:
# the sign-in page uses both); and the page a review mail's link opens, whose credential is the signed link, not a
# session or a role (its own matrix of refusals is tests/integration/review/test_email_links.py).
SKIPPED = (
    *("healthz", "readyz", "metrics", "api/v1/", "admin/", "accounts/", "_bench/", "bench-full-stack/", "v1/"),
    *("hooks/", "i18n/", "jsi18n/", "review/mail/"),
)


def page_routes() -> list[tuple[str, str]]:
    from django.urls import URLResolver, get_resolver

    found: list[tuple[str, str]] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(SKIPPED):
                continue
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            else:
                found.append((route, getattr(pattern.callback, "__name__", "")))

    walk(get_resolver().url_patterns, "")
    return found


def section_of(route: str) -> str:
    if route == "":
        return "home"
    for prefix, section in SECTIONS:
        if route.startswith(prefix):
            return section
    raise AssertionError(f"/{route}: unknown section — add its prefix to SECTIONS in {__file__}")


class Stage:
    """The objects behind path parameters, and one signed-in session per role."""

    def __init__(self, url: str):
        self.url = url
        alice, erin = ALICE.user(), ERIN.user()
        agent = agent_actions.ensure_agent("authz-browser-agent")  # no agent function: a resume changes nothing
        self.run = Run.objects.create(agent=agent, status="waiting_human", input={"q": "authz"})
        Step.objects.create(run=self.run, seq=1, kind="tool", name="lookup_order", status="completed", result={})
        Step.objects.create(run=self.run, seq=2, kind="tool", name=EXPERT_OPERATION, status="waiting_human")
        Step.objects.create(run=self.run, seq=3, kind="tool", name="send_note", status="waiting_human")
        self.expert_item = review.create_escalation(
            operation=EXPERT_OPERATION,
            reason="high_value_decision",
            priority="high",
            deadline_seconds=600,
            run=self.run,
            step_seq=2,
            agent=agent,
            arguments={"iban": MARK, "amount": 250_000},
            context={"user_input": f"please send {MARK}", "agent_analysis": MARK},
            value=250_000,
        )
        Step.objects.filter(run=self.run, seq=2).update(
            escalation_id=self.expert_item.pk, arguments={"iban": MARK, "escalation": {"tool": EXPERT_OPERATION}}
        )
        review.escalate_to_expert(self.expert_item.pk, alice, comment="above my limit")
        review.claim(self.expert_item.pk, erin)
        review.decide(
            self.expert_item.pk, erin, "modified", arguments={"iban": MARK + "-checked"}, comment=f"verified {MARK}"
        )
        self.reviewer_item = review.create_escalation(
            operation="send_note",
            reason="sensitive_operation",
            priority="high",
            deadline_seconds=600,
            run=self.run,
            step_seq=3,
            agent=agent,
            arguments={"note": REVIEWER_MARK},
        )
        Step.objects.filter(run=self.run, seq=3).update(escalation_id=self.reviewer_item.pk)
        review.claim(self.reviewer_item.pk, alice)
        review.decide(self.reviewer_item.pk, alice, "approved", comment=REVIEWER_MARK)
        # an open one, on the reviewers' queue, in the same run: its page shows the run's timeline
        self.open_item = review.create_escalation(
            operation="send_note", reason="sensitive_operation", priority="high", deadline_seconds=600, run=self.run
        )
        self.key, _ = key_actions.create_api_key(agent.name, name="authz-key")
        self.budget = make_budget("authz-budget", scope="global", limit_tokens=10**9)
        self.webhook = webhook_actions.save_webhook(Webhook(name="authz-hook", url="https://hooks.example.com/authz"))
        self.price = ModelPrice.objects.order_by("pk").first() or price_actions.set_price(
            "authz-model", Decimal("0.001"), Decimal("0.002")
        )
        self.sessions = {
            role: sign_in(url, person) if person else httpx.Client(base_url=url, timeout=30)
            for role, person in CAST.items()
        }

    def concrete(self, route: str) -> list[tuple[str, str]]:
        """The paths to request for a route, each with what its parameter names."""
        if "<" not in route:
            return [("/" + route, "")]
        if route.startswith("agents/<slug:name>"):
            filled = route.replace("<slug:name>", self.key.agent.name).replace("<int:key_id>", str(self.key.pk))
            return [("/" + filled, "")]
        if route.startswith("review/<int:pk>"):
            items = {"expert item": self.expert_item.pk, "reviewers' item": self.reviewer_item.pk}
            items["open item"] = self.open_item.pk
            return [("/" + route.replace("<int:pk>", str(pk)), what) for what, pk in items.items()]
        fills = {
            "runs/<int:run_id>": ("<int:run_id>", self.run.pk),
            "budgets/webhooks/<int:pk>": ("<int:pk>", self.webhook.pk),
            "budgets/prices/<int:pk>": ("<int:pk>", self.price.pk),
            "budgets/alerts/<int:pk>": ("<int:pk>", 999_999),
            "budgets/<int:pk>": ("<int:pk>", self.budget.pk),
            "ops/breakers/<slug:operation>": ("<slug:operation>", "none"),
            "ops/probe/<str:task_id>": ("<str:task_id>", "authz-task"),
            "review/filters/<int:pk>": ("<int:pk>", 999_999),
            "review/suggestions/changes/<int:pk>": ("<int:pk>", 999_999),
        }
        for prefix, (param, value) in fills.items():
            if route.startswith(prefix):
                return [("/" + route.replace(param, str(value)), "")]
        raise AssertionError(f"/{route}: a path parameter this test cannot fill — add it to Stage.concrete")


@pytest.fixture
def stage(web, redis_client, transactional_db) -> Stage:
    return Stage(web.extra["url"])


ROUTES = page_routes()


def test_every_page_route_has_a_known_section():
    assert ROUTES, "no page routes found"
    for route, _ in ROUTES:
        section_of(route)


def test_browser_authorization_matrix(stage: Stage):
    """Every page route × every role (one stage for all: signing the cast in is the slow part)."""
    problems: list[str] = []
    for route, path, what in [(r, *target) for r, _ in ROUTES for target in stage.concrete(r)]:
        section = section_of(route)
        for role in CAST:
            response = stage.sessions[role].get(path)
            status, body = response.status_code, response.text
            label = f"{role}: GET {path}{f' ({what})' if what else ''} -> {status}"
            if status >= 500:
                problems.append(f"{label}: a server error {body[-300:]}")
                continue
            expert_only = what == "expert item"
            allowed = role in SECTION_ROLES[section] and not (expert_only and role not in {"expert", "superuser"})
            if role == "anonymous":
                # GET on a POST-only page is refused before the sign-in check by some views: never content
                if not (status == 302 and "/accounts/login/" in response.headers.get("location", "")) and status != 405:
                    problems.append(f"{label}, expected the login page")
            elif not allowed and status not in (403, 405):
                problems.append(f"{label}, expected 403")
            elif allowed and status == 403:
                problems.append(f"{label}, expected to be let in: {body[-300:]}")
            if role not in {"expert", "superuser"} and MARK in body:
                problems.append(f"{label}: shows the expert item's content")
            if route == "review/stats/" and role in {"reviewer"} and EXPERT_OPERATION in body:
                problems.append(f"{label}: counts the expert item")
    assert not problems, "\n".join(problems)


def test_experts_do_see_what_the_others_do_not(stage: Stage):
    """The other half of the matrix: the content withheld from a reviewer is there for an expert (so the
    matrix's `MARK not in body` checks look at pages that would show it)."""
    expert, reviewer = stage.sessions["expert"], stage.sessions["reviewer"]
    export = expert.get("/review/export.jsonl").text
    assert MARK in export and f"verified {MARK}" in export and REVIEWER_MARK in export
    theirs = reviewer.get("/review/export.jsonl").text
    assert REVIEWER_MARK in theirs and MARK not in theirs
    assert [line for line in theirs.splitlines() if line.strip()], "the reviewer's export is empty"

    assert EXPERT_OPERATION in expert.get("/review/stats/").text
    assert EXPERT_OPERATION not in reviewer.get("/review/stats/").text

    run_page = expert.get(f"/runs/{stage.run.pk}/").text
    assert MARK in run_page and f"verified {MARK}" in run_page
    page = reviewer.get(f"/runs/{stage.run.pk}/")
    assert page.status_code == 200 and MARK not in page.text
    assert "expert queue" in page.text and REVIEWER_MARK in page.text  # the step is there, its content is not
    assert MARK in expert.get(f"/review/{stage.expert_item.pk}/").text
    assert reviewer.get(f"/review/{stage.expert_item.pk}/").status_code == 403
    open_page = reviewer.get(f"/review/{stage.open_item.pk}/")  # the same run's timeline, on a reviewer's page
    assert open_page.status_code == 200 and MARK not in open_page.text
    assert Escalation.objects.get(pk=stage.expert_item.pk).queue == Escalation.Queue.EXPERTS
