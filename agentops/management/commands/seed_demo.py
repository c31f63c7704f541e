"""Seed demo data idempotently: role groups and one user per role with a generated password.

Passwords are kept in the credentials file (`role username password` lines) and reused on the next
run, so re-running never duplicates users or changes logins people already have.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from agentops import actions
from agentops.roles import BUDGET_ADMIN, EXPERT, REVIEWER

DEMO_USERS = (
    # role label, username, role groups, superuser
    ("admin", "admin", (), True),
    ("reviewer", "reviewer", (REVIEWER,), False),
    ("expert", "expert", (EXPERT, REVIEWER), False),
    ("budget_admin", "budgets", (BUDGET_ADMIN,), False),
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


class Command(BaseCommand):
    help = "Create demo users (admin, reviewer, expert, budget admin) and seed data; safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("--credentials-file", default=str(settings.RUN_DIR / "demo-credentials.txt"))
        parser.add_argument("--quiet", action="store_true", help="do not print the logins")

    def handle(self, *args, credentials_file: str, quiet: bool, **options):
        path = Path(credentials_file)
        known = read_credentials(path)
        actions.ensure_role_groups()
        lines = []
        for role, username, groups, superuser in DEMO_USERS:
            password = known.get(username) or secrets.token_urlsafe(12)
            actions.ensure_user(username, password, roles=groups, superuser=superuser)
            lines.append(f"{role} {username} {password}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        if not quiet:
            self.stdout.write(f"Demo logins (also in {path}):")
            for line in lines:
                role, username, password = line.split()
                self.stdout.write(f"  {role:<13} {username:<10} {password}")
