"""Forms of the review pages: the queue filters, the reviewer's decision, the decision data's filters."""

from __future__ import annotations

import json

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.runs.models import Agent
from review.models import Escalation, Priority, Reason

ALL_QUEUES = "all"

# what the decision form's buttons say → what review.actions does with it
APPROVE, MODIFY, TAKE_OVER, ESCALATE, REJECT = "approve", "modify", "take_over", "escalate", "reject"
ACTIONS = {
    APPROVE: Escalation.Decision.APPROVED,
    MODIFY: Escalation.Decision.MODIFIED,
    TAKE_OVER: Escalation.Decision.TAKEN_OVER,
    REJECT: Escalation.Decision.REJECTED,
    ESCALATE: None,  # not a decision: the item moves to the expert queue
}
ACTION_LABELS = {
    APPROVE: gettext_lazy("Approved"),
    MODIFY: gettext_lazy("Approved with modified arguments"),
    TAKE_OVER: gettext_lazy("Taken over"),
    ESCALATE: gettext_lazy("Escalated to the expert queue"),
    REJECT: gettext_lazy("Rejected"),
}
MAX_TEXT = 200_000  # characters of edited arguments / a written result


class QueueFilterForm(forms.Form):
    """Filters of the queue page. Only experts (and superusers) may pick the expert queue or both."""

    reason = forms.ChoiceField(required=False, choices=[("", gettext_lazy("Any reason")), *Reason.choices])
    agent = forms.ChoiceField(required=False, widget=forms.Select(attrs={"data-agent-content": ""}))
    priority = forms.ChoiceField(required=False, choices=[("", gettext_lazy("Any priority")), *Priority.choices])
    queue = forms.ChoiceField(required=False)

    def __init__(self, *args, expert: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        names = Agent.objects.order_by("name").values_list("name", flat=True)
        self.fields["agent"].choices = [("", _("Any agent")), *((name, name) for name in names)]
        queues = [(Escalation.Queue.REVIEWERS.value, _("Reviewers"))]
        if expert:
            queues += [(Escalation.Queue.EXPERTS.value, _("Experts")), (ALL_QUEUES, _("Both queues"))]
        self.fields["queue"].choices = queues
        self.expert = expert

    def cleaned(self, default_queue: str) -> dict:
        """The valid filters (a bad value is reported on its field and not applied)."""
        self.is_valid()
        data = {k: v for k, v in getattr(self, "cleaned_data", {}).items() if v}
        data.setdefault("queue", default_queue)
        return data


def _parse_result(text: str):
    """A taken-over result is JSON when it parses, else the plain text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class DecisionForm(forms.Form):
    """One reviewer decision. `action` comes from the button pressed; `version` is the version of the
    escalation the reviewer saw (the exactly-once conditional update checks it)."""

    action = forms.ChoiceField(choices=[(key, key) for key in ACTIONS])
    version = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
    arguments = forms.CharField(
        required=False,
        max_length=MAX_TEXT,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "autocomplete": "off"}),
        label=gettext_lazy("Arguments (JSON object)"),
    )
    result = forms.CharField(
        required=False,
        max_length=MAX_TEXT,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        label=gettext_lazy("Result (JSON or plain text)"),
    )
    comment = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3}))
    confidence = forms.IntegerField(
        required=False,  # quick decisions from the queue carry none
        min_value=0,
        max_value=100,
        initial=80,
        widget=forms.NumberInput(attrs={"type": "range", "min": 0, "max": 100, "step": 1}),
        label=gettext_lazy("Your confidence"),
    )

    def clean(self):
        data = super().clean()
        action = data.get("action")
        if action == MODIFY:
            text = (data.get("arguments") or "").strip()
            if not text:
                self.add_error("arguments", _("Write the arguments the tool should run with, as a JSON object."))
            else:
                try:
                    parsed = json.loads(text)
                except ValueError as exc:
                    self.add_error("arguments", _("Not valid JSON: %(error)s.") % {"error": exc})
                else:
                    if isinstance(parsed, dict):
                        data["parsed_arguments"] = parsed
                    else:
                        self.add_error(
                            "arguments",
                            _("The arguments must be a JSON object, not %(kind)s.") % {"kind": _json_kind(parsed)},
                        )
        elif action == TAKE_OVER:
            text = data.get("result") or ""
            if not text.strip():
                self.add_error("result", _("Write the result the agent should receive (JSON or plain text)."))
            else:
                data["parsed_result"] = _parse_result(text.strip())
        return data


def _json_kind(value) -> str:
    if isinstance(value, list):
        return _("an array")
    if isinstance(value, str):
        return _("a string")
    if isinstance(value, bool):
        return _("a boolean")
    if value is None:
        return "null"
    return _("a number")


class DecisionFilterForm(forms.Form):
    """Filters of the decision data (the export and the stats page)."""

    agent = forms.ModelChoiceField(
        queryset=Agent.objects.all(),
        to_field_name="name",
        required=False,
        empty_label=gettext_lazy("Every agent"),
        widget=forms.Select(attrs={"data-agent-content": ""}),  # agent names are data
    )
    since = forms.DateField(required=False, label=gettext_lazy("From"), widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(
        required=False, label=gettext_lazy("To (inclusive)"), widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError(_("“From” is after “To”."))
        return data
