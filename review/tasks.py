"""Thin Celery tasks for the review app."""

from agentops.celery import app


@app.task(name="review.expire_overdue")
def expire_overdue() -> dict:
    """Beat: overdue escalations go to the expert queue once, then the safe default applies."""
    from review.actions import expire_overdue as expire

    return expire()
