"""The runs list's filters."""

from __future__ import annotations

from django import forms

from agentops.runs.models import Agent, Run


class RunFilterForm(forms.Form):
    agent = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Run.Status.choices])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Agent.objects.order_by("name").values_list("name", flat=True)
        self.fields["agent"].choices = [("", "Any agent"), *((name, name) for name in names)]

    def filtered(self, queryset):
        """Apply every filter that validated; a bad value is reported on its field, not applied."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("agent"):
            queryset = queryset.filter(agent__name=data["agent"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        return queryset
