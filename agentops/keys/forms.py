"""Forms of the Agents screen (`/agents/`). They validate and say what is wrong in words; the actions save
(agentops.runs.actions.agents for the agent, agentops.keys.actions for its keys)."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from agentops.keys.actions import clean_allowed_models
from agentops.keys.models import ApiKey
from agentops.runs.models import Agent

MODEL_SPLIT = re.compile(r"[,\s]+")
DATETIME_INPUT = "%Y-%m-%dT%H:%M"


def models_text(models) -> str:
    """A key's allowed models as the form shows them: ``gpt-4o, planning``."""
    return ", ".join(models or ())


class NewAgentForm(forms.Form):
    name = forms.SlugField(
        max_length=80,
        label=_("Name"),
        help_text=_("Letters, digits, - and _: the name its API keys act as (an external agent)."),
    )
    team = forms.SlugField(max_length=80, required=False, label=_("Team"), help_text=_("For team budgets."))

    def clean_name(self):
        name = self.cleaned_data["name"]
        if Agent.objects.filter(name=name).exists():
            raise ValidationError(_("An agent named %(name)s already exists."), params={"name": name})
        return name


class AgentForm(forms.Form):
    """An agent's settings. Its initial values come from the agent (``AgentForm.of(agent)``)."""

    team = forms.SlugField(
        max_length=80,
        required=False,
        label=_("Team"),
        help_text=_("Team budgets count this agent's spend under this team (letters, digits, - and _)."),
    )
    enabled = forms.BooleanField(
        required=False,
        label=_("Enabled"),
        help_text=_(
            "A disabled agent's keys are refused (403 on /api/v1 and /v1) and its runs do not start; "
            "every web process notices within a few seconds."
        ),
    )
    gateway_tool_review = forms.ChoiceField(
        choices=Agent.ToolReview.choices,
        label=_("Gateway tool review"),
        help_text=_("What the gateway does with answers whose tool calls the escalation policy finds sensitive."),
    )
    gateway_human = forms.ChoiceField(
        choices=Agent.GatewayHuman.choices,
        label=_("Human in the gateway"),
        help_text=Agent._meta.get_field("gateway_human").help_text,
    )

    @classmethod
    def of(cls, agent: Agent, data=None) -> AgentForm:
        initial = {field: getattr(agent, field) for field in cls.base_fields}
        return cls(data, initial=initial, prefix="agent")


class KeyLimitsForm(forms.Form):
    """What an agent admin sets on a key: allowed models, expiry, requests a minute, requests in flight."""

    allowed_models = forms.CharField(
        required=False,
        max_length=5000,
        label=_("Allowed models"),
        help_text=_("Model or route names the key may call on /v1, separated by commas; empty = every model."),
    )
    expires_at = forms.DateTimeField(
        required=False,
        input_formats=[DATETIME_INPUT, "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_INPUT),
        # formatted when shown (in the reader's language), not when the module is imported
        label=lazy(lambda: gettext("Expires at (%(zone)s)") % {"zone": settings.TIME_ZONE}, str)(),
        help_text=_("From then on the key is refused like a revoked one; empty = never."),
    )
    rate_per_minute = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        label=_("Requests a minute"),
        help_text=_("On /api/v1 and /v1 together; empty = the server's default (API_RATE_PER_SECOND)."),
    )
    max_in_flight = forms.IntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        initial=ApiKey._meta.get_field("max_in_flight").default,
        label=_("Requests in flight"),
        help_text=_("Gateway requests this key may have open at once, across every web process."),
    )

    def clean_allowed_models(self) -> list[str]:
        text = self.cleaned_data.get("allowed_models") or ""
        try:
            return clean_allowed_models(MODEL_SPLIT.split(text))
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["allowed_models"]) from None

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now() and value != self.initial.get("expires_at"):
            raise ValidationError(_("Pick a time in the future (to stop a key now, revoke it)."))
        return value

    def limits(self) -> dict:
        """The cleaned values as ``set_api_key_limits`` / ``create_api_key`` take them."""
        return {name: self.cleaned_data[name] for name in ("allowed_models", "expires_at", "rate_per_minute")} | {
            "max_in_flight": self.cleaned_data["max_in_flight"]
        }

    @classmethod
    def of(cls, key: ApiKey, data=None) -> KeyLimitsForm:
        initial = {
            "allowed_models": models_text(key.allowed_models),
            "expires_at": key.expires_at,
            "rate_per_minute": key.rate_per_minute,
            "max_in_flight": key.max_in_flight,
        }
        return cls(data, initial=initial, prefix=f"key-{key.pk}")


class NewKeyForm(KeyLimitsForm):
    name = forms.CharField(
        max_length=100, required=False, label=_("Name"), help_text=_("Where the key is used, e.g. ci or laptop.")
    )
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ApiKey.AGENT_SCOPES],
        initial=list(ApiKey.AGENT_SCOPES),
        widget=forms.CheckboxSelectMultiple,
        label=_("Scopes"),
        help_text=_("What the key may do; gateway = /v1."),
    )
    field_order = ["name", "scopes", "allowed_models", "expires_at", "rate_per_minute", "max_in_flight"]

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("prefix", "new")
        super().__init__(*args, **kwargs)
