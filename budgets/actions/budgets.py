"""Creating, changing and deleting budgets (the admin screens and the API call these)."""

from __future__ import annotations

from django.db import transaction

from agentops.lib import live
from budgets.actions.directory import directory_changed, save_to_directory
from budgets.models import Budget


def save_budget(budget: Budget) -> Budget:
    """Create or change a budget (validated). Takes effect on the next reservation in every process."""
    with transaction.atomic():
        save_to_directory(budget)
        live.publish("budgets", "budget.saved", {"budget": budget.pk})
    return budget


def delete_budget(budget_id: int) -> bool:
    """Delete a budget. Reservations still held against it are simply no longer counted."""
    with transaction.atomic():
        deleted, _ = Budget.objects.filter(pk=budget_id).delete()
        transaction.on_commit(directory_changed)
        if deleted:
            live.publish("budgets", "budget.deleted", {"budget": budget_id})
    return bool(deleted)
