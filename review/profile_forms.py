"""The reviewer's notification settings form (/review/settings/)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.validators import RegexValidator
from django.utils.translation import get_language_info
from django.utils.translation import gettext_lazy as _

from review.models import Priority, ReviewerProfile

PRIORITY_CHOICES = [
    (Priority.HIGH.value, _("high")),
    (Priority.MEDIUM.value, _("medium")),
    (Priority.LOW.value, _("low")),
]


class ReviewerSettingsForm(forms.Form):
    """How one reviewer hears of escalations. Teams are read-only here: admins set them in the admin."""

    email = forms.EmailField(label=_("Your e-mail address"), required=False, max_length=254)
    email_opt_in = forms.BooleanField(label=_("E-mail me new escalations of my queue"), required=False)
    email_priorities = forms.MultipleChoiceField(
        label=_("Priorities to e-mail"),
        choices=PRIORITY_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    email_reminders = forms.BooleanField(label=_("E-mail me a reminder shortly before a deadline"), required=False)
    language = forms.ChoiceField(label=_("Language of my mail"), required=False)
    chat_user_id = forms.CharField(
        label=_("Chat user id"),
        required=False,
        max_length=64,
        validators=[RegexValidator(r"^[A-Za-z0-9._-]+$", _("Letters, digits, dots, dashes and underscores only."))],
        help_text=_("Your Slack (or Slack-compatible) user id, e.g. U024BE7LH: buttons you press in chat act as you."),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        # each language named in the reader's language (英语 / English), like the rest of the page
        self.fields["language"].choices = [
            ("", _("The site's default")),
            *((code, get_language_info(code)["name_translated"]) for code, _name in settings.LANGUAGES),
        ]

    @classmethod
    def initial_for(cls, user, profile: ReviewerProfile | None) -> dict:
        profile = profile or ReviewerProfile(user=user)
        return {
            "email": user.email,
            "email_opt_in": profile.email_opt_in,
            "email_priorities": profile.priority_list(),
            "email_reminders": profile.email_reminders,
            "language": profile.language,
            "chat_user_id": profile.chat_user_id,
        }

    def clean_chat_user_id(self) -> str:
        value = self.cleaned_data["chat_user_id"].strip()
        if value and ReviewerProfile.objects.filter(chat_user_id=value).exclude(user=self.user).exists():
            raise forms.ValidationError(_("Another reviewer has linked this chat user id."))
        return value

    def clean(self):
        data = super().clean()
        if data.get("email_opt_in") and not data.get("email"):
            self.add_error("email", _("Give an address to get escalations by e-mail."))
        if data.get("email_opt_in") and not data.get("email_priorities"):
            self.add_error("email_priorities", _("Pick at least one priority, or turn e-mail off."))
        return data

    def settings_values(self) -> dict:
        """The cleaned values as review.mail_actions.save_reviewer_settings takes them."""
        data = self.cleaned_data
        order = [value for value, _label in PRIORITY_CHOICES]
        return {
            "email": data["email"],
            "email_opt_in": data["email_opt_in"],
            "email_priorities": ",".join(p for p in order if p in data["email_priorities"]),
            "email_reminders": data["email_reminders"],
            "language": data["language"],
            "chat_user_id": data["chat_user_id"],
        }
