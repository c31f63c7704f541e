"""Thin Celery tasks for budgets: primary keys in, an action call, nothing else. Declared with
``shared_task`` under their registered names; actions send them by name (agentops/lib/queue.py), so nothing
in budgets/actions imports this module."""

from __future__ import annotations

import functools

import httpx
from celery import shared_task
from django.conf import settings

from agentops.lib import netguard
from agentops.observability import metrics
from budgets.actions import alerts, ledger, reservations, rollups, webhooks
from budgets.models import WebhookDelivery

WEBHOOK_TIMEOUT = 5.0


@functools.cache
def webhook_client() -> httpx.Client:
    """One client per worker process. Its transport checks every request after DNS resolution and connects
    to the address it checked (agentops/lib/netguard.py); redirects are not followed, so a webhook cannot
    bounce the POST to an address it could not be saved with."""
    return netguard.guarded_client(timeout=WEBHOOK_TIMEOUT)


@shared_task(name="budgets.reclaim_expired")
def reclaim_expired() -> int:
    """Beat: give back reservations whose caller died before settling."""
    return reservations.reclaim_expired()


@shared_task(name="budgets.settle_parked")
def settle_parked() -> int:
    """Beat: write the usage of calls whose settle found PostgreSQL away."""
    return ledger.settle_parked()


@shared_task(name="budgets.evaluate_alerts")
def evaluate_alerts() -> int:
    """Beat: thresholds, session spikes and the error rate."""
    webhooks.requeue_stalled_deliveries()
    return alerts.evaluate_alerts()


@shared_task(name="budgets.roll_up_usage")
def roll_up_usage() -> int:
    """Beat: fold new ledger rows into the dashboard rollups."""
    return rollups.roll_up_usage()


@shared_task(name="budgets.deliver_webhook", bind=True, acks_late=True)
def deliver_webhook(self, delivery_pk: int) -> str:
    """POST one alert to one webhook; retried with backoff (settings.WEBHOOK_RETRY_BASE_SECONDS × 2^n, at
    most settings.WEBHOOK_MAX_RETRIES times) on a non-2xx answer or a network error. Every attempt is logged
    on the delivery row; a delivery already delivered or given up is left alone (a redelivered message)."""
    deliveries = WebhookDelivery.objects.select_related("webhook", "alert", "alert__budget")
    delivery = deliveries.filter(pk=delivery_pk).first()
    if delivery is None or delivery.status in (WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED):
        return "gone"
    max_retries = settings.WEBHOOK_MAX_RETRIES
    status_code, error, final = None, "", self.request.retries >= max_retries
    # The log keeps the status code and the error's class only: never the answer's body or an exception's
    # text, which would echo whatever the far end (possibly an internal service) sent back.
    try:
        response = webhook_client().post(delivery.webhook.url, json=webhooks.slack_payload(delivery.alert))
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}"
    except netguard.RefusedURL as exc:  # our own words, not the far end's; retrying would not change it
        error, final = f"RefusedURL: {exc}", True
    except Exception as exc:  # refused, timed out, a bad URL: each is one failed attempt, never a lost delivery
        error = type(exc).__name__
    status = webhooks.record_delivery_attempt(delivery_pk, status_code=status_code, error=error, final=final)
    metrics.WEBHOOK_DELIVERIES.labels(outcome=status).inc()
    if status == WebhookDelivery.Status.RETRYING:
        raise self.retry(
            countdown=settings.WEBHOOK_RETRY_BASE_SECONDS * 2**self.request.retries, max_retries=max_retries
        )
    return status
