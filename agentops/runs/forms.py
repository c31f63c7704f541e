"""The runs list's filters."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from agentops.runs.models import Agent, Run


class RunFilterForm(forms.Form):
    # agent names are data: the widget marks them so (the untranslated-text check skips them)
    agent = forms.ChoiceField(required=False, widget=forms.Select(attrs={"data-agent-content": ""}))
    status = forms.ChoiceField(required=False, choices=[("", _("Any status")), *Run.Status.choices])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Agent.objects.order_by("name").values_list("name", flat=True)
        self.fields["agent"].choices = [("", _("Any agent")), *((name, name) for name in names)]

    def filtered(self, queryset):
        """Apply every filter that validated; a bad value is reported on its field, not applied."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("agent"):
            queryset = queryset.filter(agent__name=data["agent"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        return queryset
