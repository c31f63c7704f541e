"""Forms of the budget admin screens. They validate; budgets.actions saves."""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from decimal import Decimal
from functools import cache

from django import forms
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from budgets.models import AlertSettings, Budget, Webhook

OPERATION = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
PAIR_SPLIT = re.compile(r"[,;\n]+")
PAST_GRACE = dt.timedelta(minutes=5)  # a form filled a few minutes ago still means "now"


@cache
def timezone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def format_operation_limits(limits: dict) -> str:
    """``{"planning": 1000, "response": 1500}`` → ``planning=1000, response=1500``."""
    if not isinstance(limits, dict):
        return ""
    return ", ".join(f"{name}={value}" for name, value in limits.items())


def parse_operation_limits(text: str) -> dict[str, int]:
    """``planning=1000, response=1500`` (also ``:`` instead of ``=``, one pair per line) → a dict of
    positive whole numbers. Raises ``forms.ValidationError`` naming every bad pair."""
    if (text or "").strip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc}) from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError(_("Write operation=tokens pairs, e.g. planning=1000, response=1500."))
        text = ", ".join(f"{k}={v}" for k, v in parsed.items())
    limits: dict[str, int] = {}
    problems: list[str] = []
    for raw in PAIR_SPLIT.split(text or ""):
        pair = raw.strip()
        if not pair:
            continue
        match = re.fullmatch(r"([^=:]*)[=:](.*)", pair)
        if match is None:
            problems.append(_('"%(pair)s" is not operation=tokens (for example planning=1000)') % {"pair": pair})
            continue
        name, value = match.group(1).strip(), match.group(2).strip()
        if not OPERATION.match(name):
            problems.append(_('"%(name)s" is not an operation name (letters, digits, _ . -)') % {"name": name})
            continue
        number = value.replace("_", "").replace(" ", "")
        if not re.fullmatch(r"[+-]?\d+", number):
            problems.append(_('%(name)s: "%(value)s" is not a whole number of tokens') % {"name": name, "value": value})
            continue
        tokens = int(number)
        if tokens <= 0:
            problems.append(
                _("%(name)s: the limit must be a positive number of tokens, not %(tokens)s")
                % {"name": name, "tokens": tokens}
            )
            continue
        if name in limits:
            problems.append(_("%(name)s is given twice") % {"name": name})
            continue
        limits[name] = tokens
    if problems:
        raise forms.ValidationError(problems)
    return limits


class BudgetForm(forms.ModelForm):
    operation_limits = forms.CharField(
        required=False,
        max_length=2000,
        label=gettext_lazy("Per-operation limits"),
        help_text=gettext_lazy("Tokens one call may use, by operation: planning=1000, response=1500. Blank = none."),
        widget=forms.TextInput(
            attrs={"placeholder": "planning=1000, tool_calls=2000, response=1500", "spellcheck": "false"}
        ),
    )

    class Meta:
        model = Budget
        fields = [
            "name",
            "scope",
            "scope_key",
            "period",
            "timezone",
            "limit_tokens",
            "limit_usd",
            "soft_threshold_pct",
            "hard_stop",
            "operation_limits",
            "on_block",
            "downgrade_model",
            "enabled",
        ]
        labels = {
            "name": gettext_lazy("Name"),
            "scope": gettext_lazy("Scope"),
            "period": gettext_lazy("Period"),
            "enabled": gettext_lazy("Enabled"),
            "scope_key": gettext_lazy("Scope key"),
            "limit_tokens": gettext_lazy("Token limit"),
            "limit_usd": gettext_lazy("Dollar limit (USD)"),
            "soft_threshold_pct": gettext_lazy("Alert at (% of the limit)"),
            "hard_stop": gettext_lazy("Hard stop"),
            "on_block": gettext_lazy("When a call is blocked"),
            "downgrade_model": gettext_lazy("Cheaper model"),
            "timezone": gettext_lazy("Time zone"),
        }
        help_texts = {
            "timezone": gettext_lazy(
                "Where the day (or month) of a day/month budget starts, e.g. Europe/Berlin or UTC."
            ),
            "limit_tokens": gettext_lazy("Per period; blank = no token limit."),
            "limit_usd": gettext_lazy("Per period; blank = no dollar limit."),
        }
        error_messages = {
            "name": {"unique": gettext_lazy("A budget with this name already exists: pick another name.")}
        }
        widgets = {"timezone": forms.TextInput(attrs={"list": "timezone-names", "autocomplete": "off"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["operation_limits"] = format_operation_limits(self.initial.get("operation_limits") or {})
        self.fields["limit_tokens"].widget.attrs["min"] = 1
        self.fields["limit_usd"].widget.attrs.update({"min": "0.0001", "step": "any"})

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError(
                _(
                    '"%(name)s" is not a time zone name. Use an IANA name such as Europe/Berlin, America/New_York '
                    "or UTC."
                )
                % {"name": name}
            ) from None
        return name

    def clean_limit_tokens(self):
        value = self.cleaned_data.get("limit_tokens")
        if value is not None and value <= 0:
            raise forms.ValidationError(_("A token limit must be a positive number (leave it blank for none)."))
        return value

    def clean_limit_usd(self):
        value = self.cleaned_data.get("limit_usd")
        if value is not None and value <= 0:
            raise forms.ValidationError(_("A dollar limit must be more than $0 (leave it blank for none)."))
        return value

    def clean_operation_limits(self) -> dict[str, int]:
        return parse_operation_limits(self.cleaned_data.get("operation_limits") or "")

    def clean_scope_key(self) -> str:
        return (self.cleaned_data.get("scope_key") or "").strip()

    def _post_clean(self):
        super()._post_clean()
        # Budget.clean and the budget_has_a_limit constraint can both report the missing limit: say it once.
        for name, errors in list(self.errors.items()):
            unique = list(dict.fromkeys(errors))
            if len(unique) != len(errors):
                self.errors[name] = self.error_class(unique)


class PriceForm(forms.Form):
    """A new price row (a change of price is a new row from ``effective_from``)."""

    model = forms.CharField(
        max_length=120,
        label=gettext_lazy("Model"),
        help_text=gettext_lazy('Model name as agents send it, or "*" for every model without its own price.'),
        widget=forms.TextInput(attrs={"list": "price-models", "autocomplete": "off", "spellcheck": "false"}),
    )
    input_per_1k = forms.DecimalField(
        label=gettext_lazy("Input $ / 1K tokens"), min_value=Decimal(0), max_digits=12, decimal_places=6
    )
    output_per_1k = forms.DecimalField(
        label=gettext_lazy("Output $ / 1K tokens"), min_value=Decimal(0), max_digits=12, decimal_places=6
    )
    cached_input_per_1k = forms.DecimalField(
        label=gettext_lazy("Cached input $ / 1K"),
        required=False,
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=6,
        help_text=gettext_lazy("Blank = the input price."),
    )
    effective_from = forms.DateTimeField(
        required=False,
        label=gettext_lazy("Effective from (UTC)"),
        help_text=gettext_lazy("Blank = now. May be in the future; never in the past (past calls keep their price)."),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 60}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
    )
    note = forms.CharField(max_length=200, required=False, label=gettext_lazy("Note"))

    def clean_model(self) -> str:
        name = self.cleaned_data["model"].strip()
        if not name:
            raise forms.ValidationError(_("Name the model."))
        return name

    def clean_effective_from(self):
        value = self.cleaned_data.get("effective_from")
        if value is not None and value < timezone.now() - PAST_GRACE:
            raise forms.ValidationError(
                _("A price takes effect now or later: calls already made keep the price they were charged.")
            )
        return value


class WebhookForm(forms.ModelForm):
    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        label=gettext_lazy("URL (Slack-compatible incoming webhook)"),
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.slack.com/services/…"}),
    )

    class Meta:
        model = Webhook
        fields = ["name", "url", "min_severity", "enabled"]
        labels = {
            "name": gettext_lazy("Name"),
            "min_severity": gettext_lazy("Send alerts from severity"),
            "enabled": gettext_lazy("Enabled"),
        }

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        if not url.lower().startswith(("http://", "https://")):
            raise forms.ValidationError(_("Use an http:// or https:// URL."))
        return url


class AlertSettingsForm(forms.ModelForm):
    class Meta:
        model = AlertSettings
        fields = ["daily_spend_usd", "session_spike_usd", "error_rate_pct", "error_rate_min_calls"]
        labels = {
            "daily_spend_usd": gettext_lazy("Daily spend (USD, all agents, today)"),
            "session_spike_usd": gettext_lazy("Session spike (USD one session spends in one hour)"),
            "error_rate_pct": gettext_lazy("Error rate (% of LLM calls over 5 min)"),
            "error_rate_min_calls": gettext_lazy("…out of at least this many calls"),
        }
