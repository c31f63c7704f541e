"""Django admin for runtime settings. Saves and deletes go through agentops.config.actions so every worker
picks the change up without a restart."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from agentops.config import actions as config_actions
from agentops.config.models import FallbackRule, ModelRoute, Provider, RetryPolicy, RuntimeSettings


class ThroughActionsAdmin(admin.ModelAdmin):
    def save_model(self, request, obj, form, change):
        config_actions.save_runtime_object(obj, actor=request.user)

    def delete_model(self, request, obj):
        config_actions.delete_runtime_object(obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            config_actions.delete_runtime_object(obj, actor=request.user)


@admin.register(Provider)
class ProviderAdmin(ThroughActionsAdmin):
    list_display = ("name", "kind", "base_url", "speaks_responses", "latency_ms", "fault_rate", "enabled")
    list_filter = ("kind", "enabled")


@admin.register(ModelRoute)
class ModelRouteAdmin(ThroughActionsAdmin):
    list_display = (
        "operation",
        "primary_provider",
        "primary_model",
        "backup_provider",
        "backup_model",
        "use_rules",
        "use_human",
        "own_answer_checks",
        "semantic_cache",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "operation",
                    ("primary_provider", "primary_model"),
                    ("backup_provider", "backup_model"),
                    "use_rules",
                    "use_human",
                )
            },
        ),
        (
            _("Answer checks"),
            {
                "description": _(
                    "By default a route's answers are checked with the runtime settings' minimum length and "
                    "rejected phrases (the seed: 10 characters, “I don't know”, “error”); a failed check moves "
                    "the call to the next handler. Turn on own answer checks to use this route's instead, e.g. "
                    "a coding route whose answers legitimately mention errors (clear the phrases) or a "
                    "classifier answering one word (minimum 1)."
                ),
                "fields": ("own_answer_checks", "min_answer_chars", "rejected_phrases"),
            },
        ),
        (
            _("Semantic cache"),
            {
                "description": _(
                    "Off by default. When on, a cacheable call (the runtime settings' cacheable operations; at "
                    "the gateway, the gateway cache setting) whose last question means the same as a cached one "
                    "is answered from the cache at no cost: same agent, same earlier messages and system "
                    "prompt, same tools and settings, similarity at or above the threshold, and the same "
                    "numbers, negations, quoted text and capitalised names, so look-alike questions are not "
                    "answered with each other's answers. Hits and near misses show on the run timeline and "
                    "in the metrics."
                ),
                "fields": (
                    "semantic_cache",
                    ("semantic_threshold", "semantic_ttl"),
                    "semantic_embeddings_model",
                ),
            },
        ),
    )


@admin.register(RetryPolicy)
class RetryPolicyAdmin(ThroughActionsAdmin):
    list_display = ("error_class", "max_retries", "base_delay", "max_delay", "multiplier", "jitter")


@admin.register(FallbackRule)
class FallbackRuleAdmin(ThroughActionsAdmin):
    list_display = ("name", "pattern", "operations", "position", "enabled")
    list_editable = ("position", "enabled")


@admin.register(RuntimeSettings)
class RuntimeSettingsAdmin(ThroughActionsAdmin):
    def has_add_permission(self, request):
        return not RuntimeSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False
