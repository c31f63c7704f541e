"""The chat channel's messages as Slack Block Kit JSON: a new escalation, a reminder, and the message that
replaces them once a button was pressed (or the item moved on).

Agent-supplied content (operation, arguments, agent name, rule) is data: escaped for Slack's mrkdwn (``&``,
``<``, ``>`` — which also neutralises ``<!channel>`` and link syntax), sent with ``verbatim`` so Slack links
nothing in it, and cut to Block Kit's limits. Call these under the chat language (``translation.override``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from review.models import Escalation
from review.presenters import PRIORITY_LABELS, REASON_LABELS, as_json, reveal

# Block Kit's limits (https://docs.slack.dev/reference/block-kit): a section's text 3,000 characters, a field
# 2,000, a header 150, a button's text 75, its value 2,000; a message at most 50 blocks.
TEXT_LIMIT, FIELD_LIMIT, HEADER_LIMIT, BUTTON_TEXT_LIMIT = 3000, 2000, 150, 75
CONFIRM_TITLE_LIMIT, CONFIRM_TEXT_LIMIT = 100, 300
MAX_BLOCKS = 50
APPROVE, REJECT, OPEN = "approve", "reject", "open"  # the buttons' action_id
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
PRIORITY_ICONS = {"high": ":red_circle:", "medium": ":large_orange_circle:", "low": ":white_circle:"}
DECISION_ICONS = {"approved": "✅", "modified": "✏️", "taken_over": "🧑", "rejected": "❌"}


def escape(text: str) -> str:
    """Text for mrkdwn: the three characters Slack's message formatting gives meaning to, as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut; never half an entity of ``escape``."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def _plain(text: str, limit: int) -> dict:
    return {"type": "plain_text", "text": cut(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = TEXT_LIMIT) -> dict:
    return {"type": "mrkdwn", "text": cut(text, limit), "verbatim": True}


def _code(value: Any, limit: int) -> str:
    """A JSON value in a code block, escaped; three backticks inside it could close the block early."""
    body = escape(as_json(value)).replace("```", "`\u200b`\u200b`")
    return "```" + cut(body, limit - 6) + "```"


def detail_url(escalation: Escalation) -> str:
    return settings.PUBLIC_URL + reverse("review:detail", args=[escalation.pk])


def button_value(escalation: Escalation) -> str:
    """What a button carries back: the item and the version the reviewer saw (a decision for another one is
    refused)."""
    return json.dumps({"escalation": escalation.pk, "version": escalation.version}, separators=(",", ":"))


def _deadline(escalation: Escalation) -> str:
    """Slack's date token: shown in the reader's own time zone, the UTC time where a client cannot."""
    stamp = int(escalation.deadline_at.timestamp())
    fallback = escalation.deadline_at.strftime("%Y-%m-%d %H:%M UTC")
    # Slack fills in {date_short_pretty} and {time}; translators keep both tokens as they are
    shown = _("{date_short_pretty} at {time}")
    return f"<!date^{stamp}^{shown}|{fallback}>"


def _agent(escalation: Escalation) -> str:
    return escape(reveal(escalation.agent.name)) if escalation.agent_id else _("(no agent)")


def _operation(escalation: Escalation) -> str:
    return escape(reveal(escalation.operation))


def _buttons(escalation: Escalation) -> dict:
    value = button_value(escalation)
    agent_name = escalation.agent.name if escalation.agent_id else "?"
    elements = []
    if escalation.approvable:
        elements.append(
            {
                "type": "button",
                "action_id": APPROVE,
                "text": _plain(_("Approve"), BUTTON_TEXT_LIMIT),
                "style": "primary",
                "value": value,
            }
        )
    elements.append(
        {
            "type": "button",
            "action_id": REJECT,
            "text": _plain(_("Reject"), BUTTON_TEXT_LIMIT),
            "style": "danger",
            "value": value,
            "confirm": {
                "title": _plain(_("Reject this action?"), CONFIRM_TITLE_LIMIT),
                "text": _plain(
                    _("%(operation)s of %(agent)s will not run; the agent is told it was rejected.")
                    % {
                        "operation": escalation.operation,
                        "agent": agent_name,
                    },
                    CONFIRM_TEXT_LIMIT,
                ),
                "confirm": _plain(_("Reject"), 30),
                "deny": _plain(_("Cancel"), 30),
                "style": "danger",
            },
        }
    )
    elements.append(
        {
            "type": "button",
            "action_id": OPEN,
            "text": _plain(pgettext("chat button: open the approval screen", "Open"), BUTTON_TEXT_LIMIT),
            "url": detail_url(escalation),
            "value": value,
        }
    )
    return {"type": "actions", "block_id": f"escalation-{escalation.pk}", "elements": elements}


def _fields(escalation: Escalation) -> list[dict]:
    priority = escalation.priority
    rows = [
        (_("Agent"), _agent(escalation)),
        (_("Operation"), _operation(escalation)),
        (_("Reason"), escape(str(REASON_LABELS.get(escalation.reason, escalation.reason)))),
        (_("Priority"), f"{PRIORITY_ICONS.get(priority, '')} {escape(str(PRIORITY_LABELS.get(priority, priority)))}"),
        (_("Deadline"), _deadline(escalation)),
        (_("Escalation"), f"#{escalation.pk}"),
    ]
    return [_mrkdwn(f"*{label}*\n{value}", FIELD_LIMIT) for label, value in rows]


def new_message(escalation: Escalation) -> dict:
    """The message for a new escalation: what, who, why, by when, the arguments, and the buttons."""
    operation, agent = reveal(escalation.operation), _agent(escalation)
    header = _("Approval needed: %(operation)s") % {"operation": operation}
    blocks: list[dict] = [
        {"type": "header", "text": _plain(header, HEADER_LIMIT)},
        {"type": "section", "fields": _fields(escalation)},
    ]
    if escalation.rule:
        rule = _("Rule")
        blocks.append({"type": "section", "text": _mrkdwn(f"*{rule}*\n{escape(reveal(escalation.rule))}")})
    label = _("Arguments") if escalation.kind != "llm" else _("Request")
    if escalation.arguments not in (None, {}, [], ""):
        heading = f"*{label}*\n"
        blocks.append(
            {"type": "section", "text": _mrkdwn(heading + _code(escalation.arguments, TEXT_LIMIT - len(heading)))}
        )
    blocks.append(_buttons(escalation))
    text = _("Approval needed: %(operation)s by %(agent)s (%(priority)s)") % {
        "operation": escape(operation),
        "agent": agent,
        "priority": escalation.priority,
    }
    return {"text": cut(text, TEXT_LIMIT), "blocks": blocks[:MAX_BLOCKS]}


def reminder_message(escalation: Escalation) -> dict:
    """The short reminder shortly before the deadline, with the same buttons."""
    line = _(
        ":alarm_clock: *Reminder*: escalation #%(pk)s (%(operation)s by %(agent)s) needs a decision "
        "before %(deadline)s."
    ) % {
        "pk": escalation.pk,
        "operation": _operation(escalation),
        "agent": _agent(escalation),
        "deadline": _deadline(escalation),
    }
    blocks = [{"type": "section", "text": _mrkdwn(line)}, _buttons(escalation)]
    return {"text": cut(line, TEXT_LIMIT), "blocks": blocks}


def outcome_line(escalation: Escalation, *, pressed_by: int | None = None) -> str:
    """What became of the item, in one mrkdwn line: decided (how, by whom), expired, or still open but
    changed since the message (someone claimed it, a newer version) — said to whoever pressed a button."""
    if escalation.state == Escalation.State.DECIDED:
        who = escape(escalation.decided_by.get_username()) if escalation.decided_by_id else _("someone")
        labels = {
            "approved": _("Approved by %(who)s"),
            "modified": _("Approved with changes by %(who)s"),
            "taken_over": _("Taken over by %(who)s"),
            "rejected": _("Rejected by %(who)s"),
        }
        label = labels.get(escalation.decision, "%(who)s") % {"who": who}
        line = f"{DECISION_ICONS.get(escalation.decision, '')} *{label}*"
        if pressed_by is not None and pressed_by != escalation.decided_by_id:
            line += " " + _("(already decided: your button press was not applied)")
        return line
    if escalation.state == Escalation.State.EXPIRED:
        return "⌛ *" + _("Expired: nobody decided in time, so the safe default (reject) applied.") + "*"
    if escalation.queue == Escalation.Queue.EXPERTS:
        return "🎓 *" + _("Moved to the expert queue: decide it in agentops.") + "*"
    return "⚠️ *" + _("This item changed since this message (claimed or updated in agentops): open it to decide.") + "*"


def outcome_message(escalation: Escalation, *, pressed_by: int | None = None) -> dict:
    """The message that replaces the original once a button was pressed: the outcome, no buttons.
    ``pressed_by``: the user whose press this answers (their press was not applied if someone else decided)."""
    line = outcome_line(escalation, pressed_by=pressed_by)
    summary = _("Escalation #%(pk)s: %(operation)s by %(agent)s") % {
        "pk": escalation.pk,
        "operation": _operation(escalation),
        "agent": _agent(escalation),
    }
    open_label = _("Open in agentops")
    link = f"<{detail_url(escalation)}|{open_label}>"
    blocks = [
        {"type": "section", "text": _mrkdwn(line)},
        {"type": "context", "elements": [_mrkdwn(f"{summary} · {link}")]},
    ]
    return {"replace_original": True, "text": cut(f"{line} · {summary}", TEXT_LIMIT), "blocks": blocks}


def ephemeral(text: str) -> dict:
    """A reply only the person who pressed sees; the original message stays as it was."""
    return {"response_type": "ephemeral", "replace_original": False, "text": cut(text, TEXT_LIMIT)}
