"""Admin for the escalation policy (saves go through agentops.actions so every worker reloads it) and
read-only views of escalations and their audit log (only review.actions changes those)."""

from django.contrib import admin

from agentops.config.admin import ThroughActionsAdmin
from review.models import AuditEvent, Escalation, EscalationPolicy, PolicyChange


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(ThroughActionsAdmin):
    list_display = (
        "__str__",
        "enabled",
        "low_confidence_below",
        "high_value_above",
        "max_retries",
        "sensitive_prefixes",
        "deadline_seconds",
        "auto_decision",
        "auto_approve_below",
    )
    list_filter = ("enabled", "agent", "auto_decision")
    search_fields = ("operation", "agent__name")
    fieldsets = (
        ("Scope", {"fields": ("agent", "operation", "enabled")}),
        ("Decide at once", {"fields": ("auto_decision", "auto_approve_below")}),
        (
            "Rules",
            {"fields": ("low_confidence_below", "high_value_above", "max_retries", "sensitive_prefixes")},
        ),
        ("Deadline", {"fields": ("deadline_seconds",)}),
        (
            "Priorities by reason",
            {
                "fields": (
                    "priority_sensitive_operation",
                    "priority_high_value_decision",
                    "priority_low_confidence",
                    "priority_max_retries_exceeded",
                    "priority_all_fallbacks_failed",
                    "priority_budget_exceeded",
                )
            },
        ),
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "event", "actor", "data")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyAdmin):
    list_display = ("pk", "reason", "priority", "state", "queue", "agent", "operation", "decision", "created_at")
    list_filter = ("state", "queue", "reason", "priority", "decision")
    search_fields = ("operation", "agent__name", "session_id")
    inlines = (AuditEventInline,)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("escalation", "event", "actor", "created_at")
    list_filter = ("event",)


@admin.register(PolicyChange)
class PolicyChangeAdmin(ReadOnlyAdmin):
    """Suggestions applied and undone (review.policy_actions writes them; /review/suggestions/ undoes)."""

    list_display = ("pk", "kind", "suggestion", "agent_name", "operation", "actor", "created_at")
    list_filter = ("kind", "suggestion")
    search_fields = ("agent_name", "operation")
