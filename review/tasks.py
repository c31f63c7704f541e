"""The review room's Celery tasks: thin, they call review.actions and review.channels."""

from celery import shared_task

from review import actions, channels
from review.channels import chat


@shared_task(name="review.expire_overdue")
def expire_overdue() -> dict:
    """Beat: overdue escalations go to the expert queue once, then the safe default applies."""
    return actions.expire_overdue()


@shared_task(name="review.remind_due")
def remind_due() -> list[int]:
    """Beat: items close to their deadline are reminded once (the channels send the reminder)."""
    return actions.due_for_reminder()


@shared_task(name="review.notify", acks_late=True, ignore_result=True)
def notify(escalation_pk: int, notice: str) -> dict:
    """Tell the channels beyond the browser (e-mail, chat) of a new escalation or a reminder."""
    return channels.notify(escalation_pk, notice)


@shared_task(name="review.chat_respond", acks_late=True, ignore_result=True)
def chat_respond(escalation_pk: int, response_url: str, pressed_by: int | None) -> int | None:
    """Replace a pressed chat message with what became of the item (review/channels/chat.py)."""
    return chat.replace_with_outcome(escalation_pk, response_url, pressed_by)


@shared_task(name="review.chat_reply", acks_late=True, ignore_result=True)
def chat_reply(response_url: str, message: dict) -> int | None:
    """Send an ephemeral reply (already translated) to whoever pressed a chat button."""
    return chat.respond(response_url, message)
