"""The review room's Celery tasks: thin, they call review.actions and review.channels."""

from celery import shared_task

from review import actions, channels


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
