"""The forms behind the suggestions page's buttons: which suggestion, exactly as the page showed it."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from review.models import Suggestion


class SuggestionForm(forms.Form):
    """Apply or dismiss: the suggestion's agent + operation and kind, and the value limit and decision count
    the page showed (the action refuses if either changed since, so nobody applies evidence they never saw)."""

    agent = forms.IntegerField(min_value=1, max_value=2**31 - 1)
    operation = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Suggestion.choices)
    below = forms.FloatField(required=False, min_value=-1e15, max_value=1e15)
    decisions = forms.IntegerField(min_value=0, max_value=2**31 - 1)

    def error_text(self) -> str:
        return _("This suggestion could not be read: %(errors)s") % {
            "errors": "; ".join(f"{name}: {' '.join(errors)}" for name, errors in self.errors.items())
        }
