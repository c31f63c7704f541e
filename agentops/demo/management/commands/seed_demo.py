"""Seed demo data idempotently: role groups and one user per role with a generated password.

Passwords are kept in the credentials file (`role username password` lines) and reused on the next
run, so re-running never duplicates users or changes logins people already have.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agentops.accounts import actions as account_actions
from agentops.accounts.roles import AGENT_ADMIN, BUDGET_ADMIN, EXPERT, REVIEWER
from agentops.config import actions as config_actions
from agentops.config.models import ModelRoute, Provider, RuntimeSettings
from agentops.demo.agents.openai_sdk import GATEWAY_DEMO_AGENT, ensure_gateway_demo_agent
from agentops.runs.actions import agents as agent_actions
from budgets.actions import budgets as budget_actions
from budgets.models import Budget
from review import mail_actions
from review.models import ReviewerProfile

DEMO_USERS = (
    # role label, username, role groups, superuser
    ("admin", "admin", (), True),
    ("reviewer", "reviewer", (REVIEWER,), False),
    ("expert", "expert", (EXPERT, REVIEWER), False),
    ("budget_admin", "budgets", (BUDGET_ADMIN,), False),
    ("agent_admin", "agents", (AGENT_ADMIN,), False),
)


def read_credentials(path: Path) -> dict[str, str]:
    """username -> password from an existing credentials file (missing or odd lines are ignored)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


DEMO_ROUTES = (
    # operation, primary model on the mock, backup model on the simulated provider
    ("planning", "gpt-4o", "gpt-4o-mini"),
    ("classify", "gpt-4o-mini", "gpt-4o"),
    ("response", "gpt-4o-mini", "gpt-4o"),
    ("summarize", "gpt-4o", "gpt-4o-mini"),
)


def route_demo_models_to_mock(mock_url: str) -> None:
    """Primary models answer from the fault-injecting mock (its faults drive retries, breakers and
    fallbacks the demo shows); backups answer from the offline simulated provider."""
    mock = Provider.objects.filter(name="mock").first() or Provider(name="mock")
    mock.kind, mock.base_url, mock.api_key, mock.enabled = Provider.Kind.OPENAI, mock_url, "demo-key", True
    config_actions.save_runtime_object(mock)
    simulated = Provider.objects.get(name="simulated")
    for operation, primary, backup in DEMO_ROUTES:
        route = ModelRoute.objects.filter(operation=operation).first() or ModelRoute(operation=operation)
        route.primary_provider, route.primary_model = mock, primary
        route.backup_provider, route.backup_model = simulated, backup
        config_actions.save_runtime_object(route)
    row = RuntimeSettings.objects.get()
    row.default_provider, row.default_model = mock, "gpt-4o-mini"
    row.backup_provider, row.backup_model = simulated, "gpt-4o"
    config_actions.save_runtime_object(row)


DEMO_BUDGETS = (
    # A dollar budget on the research agent's large-model calls: as it nears its limit calls move to the
    # cheaper model, and once even those do not fit they escalate to a reviewer (budget_exceeded).
    {
        "name": "Research agent (daily $)",
        "scope": "agent",
        "scope_key": "research",
        "period": "day",
        "limit_usd": Decimal("0.20"),
        "soft_threshold_pct": 80,
        "downgrade_model": "gpt-4o-mini",
        "on_block": "escalate",
    },
    # The openai-sdk demo agent (a plain OpenAI SDK app through the gateway): its long reports on the large
    # model bring this near its limit in the course of the (paced) day; then they move to the cheaper model,
    # and once the day's dollars are spent its uncached calls get 429 insufficient_quota until midnight.
    {
        "name": "OpenAI SDK app (daily $)",
        "scope": "agent",
        "scope_key": "openai-sdk",
        "period": "day",
        "limit_usd": Decimal("0.03"),
        "soft_threshold_pct": 80,
        "downgrade_model": "gpt-4o-mini",
        "on_block": "fail",
    },
    {
        "name": "Support team (monthly tokens)",
        "scope": "team",
        "scope_key": "support",
        "period": "month",
        "limit_tokens": 2_000_000,
        "soft_threshold_pct": 75,
        "hard_stop": False,
    },
)
DEMO_TEAMS = {"support-refund": "support", "research": "research"}
# Each demo agent's own daily tokens, a hard stop: the three together can never take more than 60,000 of
# the seeded global budget's 100,000 a day (under its 80 % alert threshold), however fast the traffic
# runs. The traffic is paced below this (DEMO_TOKENS_PER_MINUTE: 12 × (60 + 1440) = 18,000 a day per agent), so
# it spreads its share over the day instead of spending it in minutes and being refused until midnight.
DEMO_AGENT_DAILY_TOKENS = 20_000
DEMO_AGENT_BUDGETS = tuple(
    {
        "name": f"Demo {agent} (daily tokens)",
        "scope": "agent",
        "scope_key": agent,
        "period": "day",
        "limit_tokens": DEMO_AGENT_DAILY_TOKENS,
        "soft_threshold_pct": 80,
        "on_block": "fail",
    }
    for agent in (*DEMO_TEAMS, GATEWAY_DEMO_AGENT)
)


def seed_demo_budgets() -> None:
    """The demo's budgets (created once: an admin's later edits are kept) and the agents' teams."""
    for agent, team in DEMO_TEAMS.items():
        agent_actions.ensure_agent(agent, team=team)
    ensure_gateway_demo_agent()
    for fields in (*DEMO_BUDGETS, *DEMO_AGENT_BUDGETS):
        if not Budget.objects.filter(name=fields["name"]).exists():
            budget_actions.save_budget(Budget(timezone=settings.BUDGET_TIMEZONE, **fields))


def seed_demo_mail_settings() -> None:
    """The demo reviewer and expert get high-priority escalations by e-mail (make run's sink keeps the mail in
    .run/dev/mail/), once: what they change on /review/settings/ afterwards is kept."""
    for username in ("reviewer", "expert"):
        user = get_user_model().objects.get(username=username)
        if not ReviewerProfile.objects.filter(user=user).exists():
            mail_actions.save_reviewer_settings(
                user, email=f"{username}@example.com", email_opt_in=True, email_priorities="high"
            )


class Command(BaseCommand):
    help = "Create demo users (admin, reviewer, expert, budget admin, agent admin) and seed data; safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("--credentials-file", default=str(settings.RUN_DIR / "demo-credentials.txt"))
        parser.add_argument(
            "--mock-url", default="", help="route the demo models to this fault-injecting OpenAI mock (make run does)"
        )
        parser.add_argument("--quiet", action="store_true", help="do not print the logins")

    def handle(self, *args, credentials_file: str, quiet: bool, mock_url: str, **options):
        path = Path(credentials_file)
        known = read_credentials(path)
        account_actions.ensure_role_groups()
        lines = []
        for role, username, groups, superuser in DEMO_USERS:
            password = known.get(username) or secrets.token_urlsafe(12)
            account_actions.ensure_user(username, password, roles=groups, superuser=superuser)
            lines.append(f"{role} {username} {password}")
        seed_demo_mail_settings()
        agent_actions.sync_registered_agents()
        seed_demo_budgets()
        if mock_url:
            route_demo_models_to_mock(mock_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        if not quiet:
            self.stdout.write(f"Demo logins (also in {path}):")
            for line in lines:
                role, username, password = line.split()
                self.stdout.write(f"  {role:<13} {username:<10} {password}")
