"""Django admin for API keys: a key is created (and shown once), its gateway share changed or it is revoked,
always through agentops.keys.actions."""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from agentops.keys import actions as key_actions
from agentops.keys.models import ApiKey


class ApiKeyCreationForm(forms.Form):
    agent = forms.SlugField(
        label=gettext_lazy("agent"),
        max_length=80,
        help_text=gettext_lazy("an existing agent, or a new name (the agent is created)"),
    )
    name = forms.CharField(
        label=gettext_lazy("name"),
        max_length=100,
        required=False,
        help_text=gettext_lazy("a label: where the key is used"),
    )
    scopes = forms.MultipleChoiceField(
        label=gettext_lazy("scopes"),
        # a scope is shown as the machine value the API and the key's holder name it (runs, budgets:read)
        choices=[(scope, scope) for scope in ApiKey.Scope.values],
        initial=list(ApiKey.AGENT_SCOPES),
        widget=forms.CheckboxSelectMultiple,
        help_text=gettext_lazy("admin lets a key manage budgets and prices as code"),
    )
    max_in_flight = forms.IntegerField(
        label=gettext_lazy("requests in flight at most"),
        min_value=1,
        max_value=10_000,
        initial=16,
        required=False,
        help_text=gettext_lazy("gateway requests in flight at once (all processes); empty: 16"),
    )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created through a form that shows the new key once, and revoked; only their gateway share
    (max_in_flight) can be changed afterwards."""

    list_display = (
        "prefix", "agent", "name", "scope_list", "max_in_flight", "created_at", "last_used_at", "revoked_at"
    )  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "agent__name", "name")
    actions = ["revoke"]
    readonly_fields = ("agent", "name", "prefix", "scopes", "created_at", "created_by", "last_used_at", "revoked_at")
    exclude = ("secret_hash",)

    @admin.display(description=gettext_lazy("scopes"))
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def save_model(self, request, obj, form, change):
        if change:  # every other field is read-only
            key_actions.set_api_key_max_in_flight(obj.pk, obj.max_in_flight)

    def has_delete_permission(self, request, obj=None):
        return False

    def add_view(self, request, form_url="", extra_context=None):
        form = ApiKeyCreationForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            row, key = key_actions.create_api_key(
                form.cleaned_data["agent"],
                scopes=form.cleaned_data["scopes"],
                name=form.cleaned_data["name"],
                created_by=request.user.get_username(),
                max_in_flight=form.cleaned_data["max_in_flight"],
            )
            messages.warning(
                request,
                _("New key for %(agent)s — copy it now, it is not shown again: %(key)s")
                % {"agent": row.agent.name, "key": key},
            )
            return redirect("admin:agentops_apikey_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": _("Create an API key"),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/agentops/apikey/add.html", context)

    @admin.action(description=gettext_lazy("Revoke the selected keys"))
    def revoke(self, request, queryset):
        revoked = sum(key_actions.revoke_api_key(pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(
            request, ngettext("Revoked %(count)d key.", "Revoked %(count)d keys.", revoked) % {"count": revoked}
        )
