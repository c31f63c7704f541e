"""The review room's Celery tasks: thin, they call review.actions."""

from celery import shared_task

from review import actions


@shared_task(name="review.expire_overdue")
def expire_overdue() -> dict:
    """Beat: overdue escalations go to the expert queue once, then the safe default applies."""
    return actions.expire_overdue()
