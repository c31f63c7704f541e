"""Admin for the escalation policy (saves go through agentops.actions so every worker reloads it) and
read-only views of escalations and their audit log (only review.actions changes those)."""

import functools

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy

from agentops.config.admin import ThroughActionsAdmin
from review import actions
from review.models import (
    AuditEvent,
    ChatSettings,
    Escalation,
    EscalationPolicy,
    MailDelivery,
    PolicyChange,
    ReviewerProfile,
)
from review.presenters import EVENT_LABELS


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
        (gettext_lazy("Scope"), {"fields": ("agent", "operation", "enabled")}),
        (gettext_lazy("Decide at once"), {"fields": ("auto_decision", "auto_approve_below")}),
        (
            gettext_lazy("Rules"),
            {"fields": ("low_confidence_below", "high_value_above", "max_retries", "sensitive_prefixes")},
        ),
        (gettext_lazy("Deadline"), {"fields": ("deadline_seconds",)}),
        (
            gettext_lazy("Priorities by reason"),
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
    list_display = ("escalation", "event_label", "actor", "created_at")
    list_filter = ("event",)

    @admin.display(description=gettext_lazy("event"), ordering="event")
    def event_label(self, obj: AuditEvent) -> str:
        """The event in the reader's language, as the approval screen's audit log names it."""
        return str(EVENT_LABELS.get(obj.event, obj.event))


@admin.register(ReviewerProfile)
class ReviewerProfileAdmin(admin.ModelAdmin):
    """Admins set a reviewer's teams here (the reviewer's own settings page shows them read-only)."""

    list_display = ("user", "teams", "email_opt_in", "email_priorities", "email_reminders", "language", "chat_user_id")
    list_filter = ("email_opt_in", "email_reminders", "language")
    search_fields = ("user__username", "user__email", "teams", "chat_user_id")
    autocomplete_fields = ("user",)


class ReviewerProfileInline(admin.StackedInline):
    model = ReviewerProfile
    can_delete = False
    extra = 0
    max_num = 1
    fields = ("teams", "email_opt_in", "email_priorities", "email_reminders", "language", "chat_user_id")


@admin.register(MailDelivery)
class MailDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("escalation", "user", "notice", "queue", "sent_at")
    list_filter = ("notice", "queue")


class ReviewerUserAdmin(UserAdmin):
    """Django's user admin with the reviewer profile inline (teams, mail and chat settings)."""

    inlines = (*UserAdmin.inlines, ReviewerProfileInline)


# django.contrib.auth registered User first (it comes before review in INSTALLED_APPS).
User = get_user_model()
admin.site.unregister(User)
admin.site.register(User, ReviewerUserAdmin)


def masked(secret: str) -> str:
    """A secret as a page may show it: its last four characters at most (none of a short one)."""
    if not secret:
        return ""
    return "••••" + (secret[-4:] if len(secret) >= 16 else "")


class ChatSettingsForm(forms.ModelForm):
    """The signing secret is never sent back to the browser: a blank field keeps the stored one."""

    signing_secret = forms.CharField(
        label=gettext_lazy("signing secret"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    clear_signing_secret = forms.BooleanField(label=gettext_lazy("remove the stored signing secret"), required=False)

    class Meta:
        model = ChatSettings
        fields = ("webhook_url", "signing_secret", "language")
        field_classes = {"webhook_url": functools.partial(forms.URLField, assume_scheme="https")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stored = self.instance.signing_secret if self.instance.pk else ""
        help_text = str(ChatSettings._meta.get_field("signing_secret").help_text)
        if stored:
            help_text += " " + str(gettext_lazy("Stored: %(masked)s. Leave blank to keep it.")) % {
                "masked": masked(stored)
            }
        self.fields["signing_secret"].help_text = help_text

    def clean_signing_secret(self) -> str:
        typed = self.cleaned_data.get("signing_secret", "").strip()
        if self.data.get("clear_signing_secret"):
            return ""
        return typed or (self.instance.signing_secret if self.instance.pk else "")


@admin.register(ChatSettings)
class ChatSettingsAdmin(admin.ModelAdmin):
    form = ChatSettingsForm
    list_display = ("__str__", "webhook_url", "language")

    def has_add_permission(self, request):
        return not ChatSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        actions.save_chat_settings(obj)


@admin.register(PolicyChange)
class PolicyChangeAdmin(ReadOnlyAdmin):
    """Suggestions applied and undone (review.policy_actions writes them; /review/suggestions/ undoes)."""

    list_display = ("pk", "kind", "suggestion", "agent_name", "operation", "actor", "created_at")
    list_filter = ("kind", "suggestion")
    search_fields = ("agent_name", "operation")
