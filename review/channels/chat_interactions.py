"""Button presses from chat (``POST /hooks/slack/interactive``): verified as Slack documents its request
signing, mapped to a reviewer by their linked chat user id, decided through ``review.actions.decide`` with
``channel="chat"``, answered at once; the message is replaced afterwards by a task (Slack wants its answer
within 3 s).

Verification (https://docs.slack.dev/authentication/verifying-requests-from-slack): ``X-Slack-Signature`` is
``v0=`` + hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}`` keyed with the signing secret,
compared in constant time (slack_sdk's ``SignatureVerifier``); a timestamp more than 5 minutes off is refused,
and so is a signature seen before (kept in Redis for twice the window, so a replay inside it is caught).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import redis
import structlog
from django.conf import settings
from django.utils.translation import gettext as _
from slack_sdk.signature import Clock, SignatureVerifier

from agentops.accounts import roles
from agentops.lib import netguard
from agentops.lib.queue import enqueue_on_commit
from agentops.lib.redis import runtime_redis
from review import actions
from review.actions import DecisionConflict
from review.channels import chat_blocks
from review.channels.chat_blocks import APPROVE, OPEN, REJECT
from review.models import Escalation, ReviewerProfile

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 300  # Slack's: a request signed more than 5 minutes ago (or ahead) is refused
SEEN_PREFIX = "review:slack:seen:"
SETTINGS_PATH = "/review/settings/"  # where a reviewer links their chat user id
DECISIONS = {APPROVE: Escalation.Decision.APPROVED, REJECT: Escalation.Decision.REJECTED}


class _Now(Clock):
    """slack_sdk's clock, reading ``time.time`` when asked (the window is checked here first, on the same clock)."""

    def now(self) -> float:
        return time.time()


class Refused(Exception):
    """The request is not answered as a press: ``status`` and a short ``message`` for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Press:
    """One button press: which button, who pressed it in chat, on which item at which version, and where
    to send the replacement message."""

    action: str
    chat_user_id: str
    escalation_pk: int
    version: int
    response_url: str


# --- verification ------------------------------------------------------------------------------------------
def verify(secret: str, body: bytes, headers) -> None:
    """Refused (401) unless ``body`` was signed with ``secret`` less than 5 minutes from now and this
    signature was never seen before; 503 when Redis cannot say whether it was."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not timestamp or not signature:
        raise Refused(401, "missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise Refused(401, "X-Slack-Request-Timestamp is not a Unix time")
    if abs(time.time() - int(timestamp)) > WINDOW_SECONDS:
        raise Refused(401, "stale request: its timestamp is more than 5 minutes away from now")
    try:
        valid = SignatureVerifier(secret, clock=_Now()).is_valid(body, timestamp, signature)
    except UnicodeDecodeError as exc:
        raise Refused(400, "the body is not UTF-8") from exc
    if not valid:
        raise Refused(401, "bad signature")
    key = SEEN_PREFIX + hashlib.sha256(signature.encode()).hexdigest()
    try:
        first = runtime_redis().set(key, timestamp, nx=True, ex=2 * WINDOW_SECONDS)
    except redis.RedisError as exc:
        raise Refused(503, "cannot check for replayed requests right now; try again") from exc
    if not first:
        raise Refused(401, "replayed request: this signature was already used")


# --- parsing -----------------------------------------------------------------------------------------------
def parse(body: bytes) -> Press | None:
    """The press in a signed body (a form with a JSON ``payload``); None for a press that needs no answer
    but an acknowledgement (the Open button, which is a link). Refused (400) for anything else."""
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, "the body is not a form") from exc
    raw = form.get("payload", [""])[0]
    if not raw:
        raise Refused(400, "the form has no payload field")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise Refused(400, "the payload is not JSON") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise Refused(400, "only block_actions interactions are handled here")
    user, pressed = payload.get("user"), payload.get("actions")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise Refused(400, "the payload names no user.id")
    if not isinstance(pressed, list) or not pressed or not isinstance(pressed[0], dict):
        raise Refused(400, "the payload has no actions")
    action = pressed[0].get("action_id")
    if action == OPEN:
        return None
    if action not in DECISIONS:
        raise Refused(400, "unknown action_id")
    try:
        value = json.loads(pressed[0].get("value") or "")
        escalation_pk, version = value["escalation"], value["version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(400, "the button's value is not an escalation and a version") from exc
    if not all(type(number) is int and number >= 0 for number in (escalation_pk, version)):
        raise Refused(400, "the button's value is not an escalation and a version")
    response_url = payload.get("response_url")
    if not isinstance(response_url, str) or not response_url:
        raise Refused(400, "the payload has no response_url")
    try:
        netguard.check_url(response_url, resolve_names=False)  # the task checks it again after DNS resolution
    except netguard.RefusedURL as exc:
        raise Refused(400, f"response_url refused: {exc}") from exc
    return Press(action, user["id"], escalation_pk, version, response_url)


# --- deciding ----------------------------------------------------------------------------------------------
def _reply(press: Press, status: int, text: str) -> tuple[int, dict]:
    """An ephemeral reply to the presser: in the answer and, since Slack shows only what reaches the
    response URL for block actions, sent there too (after the answer)."""
    message = chat_blocks.ephemeral(text)
    enqueue_on_commit("review.chat_reply", press.response_url, message)
    return status, message


def handle(press: Press) -> tuple[int, dict]:
    """Decide the press as the linked reviewer; answers the HTTP status and body for Slack. Call it under
    the chat language (the replies are translated)."""
    profile = ReviewerProfile.objects.select_related("user").filter(chat_user_id=press.chat_user_id).first()
    if profile is None or not profile.user.is_active:
        text = _(
            'Your chat user (%(id)s) is not linked to an agentops reviewer. Add it under "chat user id" on '
            "%(url)s, then press the button again."
        ) % {"id": press.chat_user_id, "url": settings.PUBLIC_URL + SETTINGS_PATH}
        return _reply(press, 403, text)
    user = profile.user
    escalation = Escalation.objects.filter(pk=press.escalation_pk).first()
    if escalation is None:
        return _reply(press, 404, _("Escalation #%(pk)s does not exist any more.") % {"pk": press.escalation_pk})
    if not roles.can_open(user, "queue") or not Escalation.objects.visible_to(user).filter(pk=escalation.pk).exists():
        text = _("Your agentops account (%(user)s) may not decide escalation #%(pk)s.") % {
            "user": user.get_username(),
            "pk": escalation.pk,
        }
        return _reply(press, 403, text)
    if press.action == APPROVE and not escalation.approvable:
        return _reply(press, 400, _("There is no proposed action to approve: open it to take over or reject."))
    try:
        decided = actions.decide(escalation.pk, user, DECISIONS[press.action], version=press.version, channel="chat")
    except DecisionConflict:
        enqueue_on_commit("review.chat_respond", escalation.pk, press.response_url, user.pk)
        current = Escalation.objects.select_related("decided_by").get(pk=escalation.pk)
        log.info("review.chat_press_refused", escalation=escalation.pk, user=user.pk, state=current.state)
        return 409, chat_blocks.ephemeral(chat_blocks.outcome_line(current, pressed_by=user.pk))
    enqueue_on_commit("review.chat_respond", escalation.pk, press.response_url, user.pk)
    log.info("review.chat_decided", escalation=escalation.pk, user=user.pk, decision=decided.decision)
    return 200, {"ok": True, "decision": decided.decision}
