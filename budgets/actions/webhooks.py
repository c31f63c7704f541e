"""Webhooks: the payload an alert is POSTed with, each delivery attempt's log, deliveries whose task was
lost handed back to Celery, a test alert, and the webhook and alert-threshold settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agentops.lib import live
from agentops.lib.queue import send_now
from budgets.actions.alerts import announce
from budgets.models import Alert, AlertSettings, Webhook, WebhookDelivery

log = structlog.get_logger(__name__)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible incoming-webhook JSON (``text`` is what Slack shows; the rest is for machines)."""
    icon = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}[alert.severity]
    return {
        "text": f"{icon} agentops {alert.get_kind_display()}: {alert.message}",
        "agentops": {
            "alert_id": alert.pk,
            "kind": alert.kind,
            "severity": alert.severity,
            "budget": alert.budget.name if alert.budget_id else None,
            "subject": alert.subject,
            "details": alert.details,
            "created_at": alert.created_at.isoformat(),
        },
    }


def record_delivery_attempt(delivery_id: int, *, status_code: int | None, error: str, final: bool) -> str:
    """Log one attempt; returns the delivery's new status (delivered on a 2xx)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error[:500]
        delivery.log = [*delivery.log, {"at": now.isoformat(), "status_code": status_code, "error": error[:300]}]
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = now
        else:
            delivery.status = WebhookDelivery.Status.FAILED if final else WebhookDelivery.Status.RETRYING
        delivery.updated_at = now
        delivery.save(
            update_fields=["attempts", "last_status_code", "last_error", "log", "status", "delivered_at", "updated_at"]
        )
        live.publish("alerts", "webhook.delivery", {"delivery": delivery.pk, "status": delivery.status})
        return delivery.status


STALLED_PENDING = dt.timedelta(minutes=2)
STALLED_RETRYING = dt.timedelta(minutes=15)


def requeue_stalled_deliveries() -> int:
    """Beat: hand deliveries whose task was lost (Redis restarted, enqueue failed after commit) back to
    Celery. Webhooks are at-least-once: a delivery that was only slow may be POSTed twice."""
    now = timezone.now()
    stalled = list(
        WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.PENDING, updated_at__lt=now - STALLED_PENDING)
            | Q(status=WebhookDelivery.Status.RETRYING, updated_at__lt=now - STALLED_RETRYING)
        ).values_list("pk", flat=True)[:200]
    )
    for pk in stalled:
        WebhookDelivery.objects.filter(pk=pk).update(updated_at=now)
        send_now("budgets.deliver_webhook", pk)  # beat, outside a transaction: at once
    if stalled:
        log.warning("budget.webhook_deliveries_requeued", count=len(stalled))
    return len(stalled)


def send_test_alert(webhook: Webhook, user) -> Alert:
    """A test alert delivered to this one webhook (the settings screen's "send test" button)."""
    now = timezone.now()
    with transaction.atomic():
        alert = Alert.objects.create(
            kind=Alert.Kind.TEST,
            severity=Alert.Severity.INFO,
            message=f"Test alert for webhook {webhook.name!r}, sent by {user}",
            dedup_key=f"test:{webhook.pk}:{now.isoformat()}",
            created_at=now,
            acknowledged_at=now,
            acknowledged_by=user if getattr(user, "pk", None) else None,
        )
        announce(alert, [webhook])
    return alert


def _save_validated(row):
    """Validate (ValidationError, nothing saved) and save a settings row."""
    with transaction.atomic():
        row.full_clean()
        row.save()
    return row


def save_webhook(webhook: Webhook) -> Webhook:
    return _save_validated(webhook)


def delete_webhook(webhook_id: int) -> None:
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook_id).delete()


def save_alert_settings(config: AlertSettings) -> AlertSettings:
    return _save_validated(config)
