"""manage.py create_api_key AGENT [--scopes runs,actions,...] [--name NAME] [--max-in-flight N]: print a new key
once."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug

from agentops.keys import actions as key_actions
from agentops.keys.models import ApiKey


class Command(BaseCommand):
    help = (
        "Create an API key for AGENT (the agent is created if it does not exist) and print it once. "
        f"Without --scopes the key gets every agent scope ({', '.join(ApiKey.AGENT_SCOPES)}), never admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent", help="agent name (a slug: letters, digits, - and _)")
        parser.add_argument("--scopes", default="", help=f"comma-separated, from {', '.join(ApiKey.Scope.values)}")
        parser.add_argument("--name", default="", help="a label for the key (where it is used)")
        parser.add_argument(
            "--max-in-flight", type=int, default=None, help="gateway requests in flight at once (default 16)"
        )

    def handle(self, *args, agent: str, scopes: str, name: str, max_in_flight: int | None, **options):
        try:
            validate_slug(agent)
        except ValidationError as exc:
            raise CommandError(f"{agent!r} is not a valid agent name: use letters, digits, - and _") from exc
        chosen = [s.strip() for s in scopes.split(",") if s.strip()] or None
        try:
            row, key = key_actions.create_api_key(
                agent, scopes=chosen, name=name, created_by="manage.py", max_in_flight=max_in_flight
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"key {row.prefix} for agent {agent}, scopes {', '.join(row.scopes)} (shown once):")
        self.stdout.write(key)
