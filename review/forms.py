"""Forms of the review pages: the queue filters, the reviewer's decision, the decision data's filters."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.runs.models import Agent
from review.models import Escalation, Priority, Reason
from review.saved_filters import FILTER_KEYS as FILTER_KEYS  # the page links and saved views keep these

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


# The queue's sort orders: (label, ORDER BY). Each ends in the primary key so a page boundary is stable.
SORTS = {
    "priority": (gettext_lazy("Most urgent first"), ("priority_rank", "created_at", "pk")),
    "age": (gettext_lazy("Oldest first"), ("created_at", "pk")),
    "-age": (gettext_lazy("Newest first"), ("-created_at", "-pk")),
    "deadline": (gettext_lazy("Deadline soonest"), ("deadline_at", "pk")),
}
DEFAULT_SORT = "priority"
ALL_TEAMS, MY_TEAMS = "all", "mine"
ASSIGNED_TO_ME, UNASSIGNED = "me", "none"
SEARCH_MAX = 200  # characters of a search; a longer one is a form error, never a slow query
MAX_PAGE = 100_000


def _reviewer_teams(user) -> list[str]:
    profile = getattr(user, "reviewer_profile", None) if user is not None else None
    return profile.team_list() if profile else []


class QueueFilterForm(forms.Form):
    """Filters, search, sort and page of the queue (all in the query string, so a view is a bookmark). Only
    experts (and superusers) may pick the expert queue or both. A reviewer whose profile names teams sees
    those teams' items (and items of no team) unless they pick another team or every team."""

    q = forms.CharField(
        required=False,
        max_length=SEARCH_MAX,
        label=gettext_lazy("Search"),
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": gettext_lazy("operation, arguments, session, agent")}
        ),
    )
    reason = forms.ChoiceField(required=False, label=gettext_lazy("Reason"))
    agent = forms.ChoiceField(required=False, label=gettext_lazy("Agent"))
    priority = forms.ChoiceField(required=False, label=gettext_lazy("Priority"))
    queue = forms.ChoiceField(required=False, label=gettext_lazy("Queue"))
    team = forms.ChoiceField(required=False, label=gettext_lazy("Team"))
    assignee = forms.CharField(required=False, max_length=150, label=gettext_lazy("Assignee"))
    sort = forms.ChoiceField(
        required=False, label=gettext_lazy("Sort"), choices=[(key, label) for key, (label, _) in SORTS.items()]
    )
    page = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE, widget=forms.HiddenInput)

    def __init__(self, *args, expert: bool = False, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].choices = [("", gettext_lazy("Any reason")), *Reason.choices]
        self.fields["priority"].choices = [("", gettext_lazy("Any priority")), *Priority.choices]
        names = Agent.objects.order_by("name").values_list("name", flat=True)
        self.fields["agent"].choices = [("", gettext_lazy("Any agent")), *((name, name) for name in names)]
        queues = [(Escalation.Queue.REVIEWERS.value, gettext_lazy("Reviewers"))]
        if expert:
            queues += [
                (Escalation.Queue.EXPERTS.value, gettext_lazy("Experts")),
                (ALL_QUEUES, gettext_lazy("Both queues")),
            ]
        self.fields["queue"].choices = queues
        self.my_teams = _reviewer_teams(user)
        known = sorted(set(Agent.objects.exclude(team="").values_list("team", flat=True)) | set(self.my_teams))
        teams = [(ALL_TEAMS, gettext_lazy("Every team"))]
        if self.my_teams:
            teams.insert(0, (MY_TEAMS, gettext_lazy("My teams")))
        self.fields["team"].choices = teams + [(team, team) for team in known]
        self.fields["assignee"].widget = forms.TextInput(
            attrs={"list": "assignee-choices", "placeholder": gettext_lazy("me, none or a username")}
        )
        self.expert = expert
        self.user = user

    def clean_assignee(self) -> str:
        value = self.cleaned_data.get("assignee", "").strip()
        if value in ("", ASSIGNED_TO_ME, UNASSIGNED):
            return value
        if not get_user_model().objects.filter(username=value).exists():
            raise forms.ValidationError(
                gettext_lazy("No user is called %(name)s (“me”, “none” or a username)."), params={"name": value}
            )
        return value

    def default_team(self) -> str:
        return MY_TEAMS if self.my_teams else ALL_TEAMS

    def cleaned(self, default_queue: str) -> dict:
        """The valid filters (a bad value is reported on its field and not applied), with the defaults filled in."""
        self.is_valid()
        data = {k: v for k, v in getattr(self, "cleaned_data", {}).items() if v}
        data.setdefault("queue", default_queue)
        data.setdefault("team", self.default_team())
        data.setdefault("sort", DEFAULT_SORT)
        data.setdefault("page", 1)
        data["my_teams"] = self.my_teams
        return data


class SavedFilterForm(forms.Form):
    """Name the queue view being looked at (its query string comes with it, from the page)."""

    name = forms.CharField(max_length=80, label=gettext_lazy("Save this view as"))
    query = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)


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


# --- bulk decisions and assignment (the queue's selection, the assign controls) ------------------------
BULK_ACTIONS = {APPROVE: Escalation.Decision.APPROVED, REJECT: Escalation.Decision.REJECTED}


class BulkDecisionForm(forms.Form):
    """A bulk approve / reject of the selected rows. Each ``pick`` is ``<escalation id>:<version shown>``."""

    action = forms.ChoiceField(choices=[(APPROVE, APPROVE), (REJECT, REJECT)])
    comment = forms.CharField(required=False, max_length=5000, label=gettext_lazy("Comment (optional, for every item)"))

    def clean(self):
        data = super().clean()
        # every pick is read (MAX_BODY_BYTES bounds them): review.bulk refuses more than its limit by count
        raw = self.data.getlist("pick") if hasattr(self.data, "getlist") else []
        picks: dict[int, int] = {}
        for value in raw:
            pk, _, version = str(value).partition(":")
            if not (pk.isdigit() and version.isdigit()) or len(pk) > 12 or len(version) > 9:
                raise forms.ValidationError(
                    gettext_lazy("The selection is not valid; reload the queue and select again.")
                )
            picks[int(pk)] = int(version)
        if not picks:
            raise forms.ValidationError(gettext_lazy("Select at least one escalation first."))
        data["picks"] = picks
        return data


ASSIGN_ME = "me"


class AssignForm(forms.Form):
    """Assign an item: ``assignee`` is a user id, ``me``, or empty to unassign."""

    assignee = forms.CharField(required=False, max_length=20)

    def clean_assignee(self) -> str:
        value = self.cleaned_data["assignee"].strip()
        if value and value != ASSIGN_ME and not value.isdigit():
            raise forms.ValidationError(gettext_lazy("Choose a reviewer from the list."))
        return value
