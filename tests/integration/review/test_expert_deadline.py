"""Re-escalating an item already in the expert queue keeps its deadline (issue 14, item 7): only the first
move to the experts gives a fresh deadline, so passing an item around cannot keep it open past what its
waiter was promised."""

from __future__ import annotations

import pytest

from review import actions as review
from review.models import AuditEvent
from tests.fixtures.stack import reseed_runtime

pytestmark = pytest.mark.django_db(transaction=True)


def test_re_escalating_an_item_in_the_expert_queue_keeps_its_deadline(redis_client, erin):
    reseed_runtime()
    escalation = review.create_escalation(
        operation="send_invoice", reason="sensitive_operation", priority="high", deadline_seconds=600
    )
    first = review.escalate_to_expert(escalation.pk, erin, comment="needs an expert")
    assert first.queue == "experts" and first.deadline_at > escalation.deadline_at
    again = review.escalate_to_expert(escalation.pk, erin, comment="still unsure")
    assert (again.deadline_at, again.escalated_at) == (first.deadline_at, first.escalated_at)
    assert AuditEvent.objects.filter(escalation=escalation, event="escalated_to_expert").count() == 2
