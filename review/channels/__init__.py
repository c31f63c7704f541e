"""The channels where reviewers hear of escalations and decide them beyond the live browser queue (DESIGN §6).

Each channel is a module here with ``deliver(escalation, notice) -> int`` (how many messages it sent; it
decides itself whether it is configured and whom it reaches) and decides through ``review.actions.decide``
with its own ``channel=`` name, so the audit log names where a decision came from. ``notify`` runs in the
``review.notify`` task, after the escalation's transaction committed; one channel failing never stops the
others.
"""

from __future__ import annotations

import importlib

import structlog

from review.models import Escalation

log = structlog.get_logger(__name__)

# The channel modules, by name (each one imported lazily: a channel's libraries load only where it is used).
CHANNEL_MODULES: tuple[str, ...] = ("email", "chat")


def notify(escalation_pk: int, notice: str) -> dict:
    """Hand a new escalation (``notice`` "new") or a reminder ("reminder") to every channel; answers
    ``{channel: messages sent}``. An item that is no longer open is not announced."""
    escalation = Escalation.objects.select_related("agent", "run").filter(pk=escalation_pk).first()
    sent: dict[str, int] = {}
    if escalation is None or not escalation.is_open:
        return sent
    for name in CHANNEL_MODULES:
        try:
            sent[name] = importlib.import_module(f"review.channels.{name}").deliver(escalation, notice)
        except Exception:
            log.exception("review.channel_failed", channel=name, escalation=escalation_pk, notice=notice)
            sent[name] = 0
    return sent
