"""Approvals in chat, Slack-compatible (issue 18 item 2): one Block Kit message per new escalation (and a
short reminder) posted to the configured incoming webhook, and the replies to button presses sent to the
press's ``response_url``.

Every request goes through the outbound-URL guard (agentops/lib/netguard.py): a webhook URL an admin typed
and a response URL a request carried may only reach public addresses (Slack's are https://hooks.slack.com/…)
unless the operator allow-listed them. Posts time out and are retried a few times with backoff (tenacity) on
network errors, 429 and 5xx; a refused address is not retried. The button presses themselves arrive at
``review.hooks.slack_interactive`` (review/channels/chat_interactions.py decides them).
"""

from __future__ import annotations

import functools

import httpx
import structlog
from django.utils import translation
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from agentops.lib import netguard
from review import actions
from review.channels import chat_blocks
from review.models import ChatSettings, Escalation

log = structlog.get_logger(__name__)

POST_TIMEOUT = 5.0  # seconds for one post; Slack answers a webhook in well under a second
POST_ATTEMPTS = 3  # the first try and two retries (0.25 s, then 0.5 s later)
POSTED_EVENT = "posted_to_chat"


class RetryablePost(Exception):
    """The far end answered 429 or 5xx: worth another try."""


@functools.cache
def _client() -> httpx.Client:
    """One client per process (a worker's pool process, or the web process): connections are kept alive."""
    return netguard.guarded_client(timeout=POST_TIMEOUT)


def post_json(url: str, payload: dict) -> int:
    """POST ``payload`` as JSON to ``url`` through the outbound guard; the final status code. Raises
    netguard.RefusedURL (not retried), httpx.HTTPError or RetryablePost once the attempts are used up."""
    retrying = Retrying(
        stop=stop_after_attempt(POST_ATTEMPTS),
        wait=wait_exponential(multiplier=0.25, max=2),
        retry=retry_if_exception_type((httpx.TransportError, RetryablePost)),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            response = _client().post(url, json=payload)
            if response.status_code == 429 or response.status_code >= 500:
                raise RetryablePost(f"HTTP {response.status_code}")
            return response.status_code
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


def message_for(escalation: Escalation, notice: str, language: str) -> dict:
    """The Block Kit message announcing ``escalation`` (``notice`` "new" or "reminder"), in ``language``."""
    with translation.override(language):
        if notice == actions.NOTICE_REMINDER:
            return chat_blocks.reminder_message(escalation)
        return chat_blocks.new_message(escalation)


def deliver(escalation: Escalation, notice: str) -> int:
    """Post the message for a new escalation or a reminder to the configured webhook (nothing when chat is
    not configured); audited as ``posted_to_chat`` with the status or the error. Answers 1 when posted."""
    config = ChatSettings.current()
    if not config.posting:
        return 0
    payload = message_for(escalation, notice, config.language)
    status, error = None, ""
    try:
        status = post_json(config.webhook_url, payload)
    except netguard.RefusedURL as exc:  # our own words: which address and why
        error = f"RefusedURL: {exc}"
    except (httpx.HTTPError, RetryablePost) as exc:
        error = type(exc).__name__ if not isinstance(exc, RetryablePost) else str(exc)
    ok = status is not None and 200 <= status < 300
    if status is not None and not ok:
        error = f"HTTP {status}"
    actions.record_channel_event(
        escalation.pk, POSTED_EVENT, notice=notice, ok=ok, status=status, error=error, version=escalation.version
    )
    log_event = log.info if ok else log.warning
    log_event("review.chat_posted", escalation=escalation.pk, notice=notice, status=status, error=error)
    return 1 if ok else 0


def respond(response_url: str, payload: dict) -> int | None:
    """Send ``payload`` to a button press's response URL (replace the message, or an ephemeral reply);
    the status, or None when it could not be sent (logged)."""
    try:
        return post_json(response_url, payload)
    except netguard.RefusedURL as exc:
        log.warning("review.chat_response_refused", error=str(exc))
    except (httpx.HTTPError, RetryablePost) as exc:
        log.warning("review.chat_response_failed", error=type(exc).__name__)
    return None


def replace_with_outcome(escalation_pk: int, response_url: str, pressed_by: int | None) -> int | None:
    """Replace the pressed message with what became of the item (decided by whom, expired, changed), its
    buttons gone. Reads the item now, so a press answered late still says the truth."""
    escalation = Escalation.objects.select_related("agent", "decided_by").filter(pk=escalation_pk).first()
    if escalation is None:
        return None
    with translation.override(ChatSettings.current().language):
        payload = chat_blocks.outcome_message(escalation, pressed_by=pressed_by)
    return respond(response_url, payload)
