"""The words of django-axes' admin pages (Axes › Access attempts, Access logs, Access failures), which it
ships no Chinese catalog for. Listing them here puts them in our catalog (`make messages` extracts them),
and Django takes a translation from LOCALE_PATHS before an app's own, so the sign-in throttling pages of the
admin read in Chinese too. Never imported: only the extractor reads it."""

from django.utils.translation import gettext_lazy as _

AXES_ADMIN_WORDS = (
    _("access attempt"),
    _("access attempts"),
    _("access log"),
    _("access logs"),
    _("access failure"),
    _("access failures"),
    _("access attempt expiration"),
    _("access attempt expirations"),
    _("Access Attempt"),
    _("Access lock out"),
    _("Attempt Remaining"),
    _("Attempt Time"),
    _("Clean up expired attempts"),
    _("Expires At"),
    _("Failed Logins"),
    _("Form Data"),
    _("GET Data"),
    _("HTTP Accept"),
    _("IP Address"),
    _("Locked Out"),
    _("Logout Time"),
    _("Meta Data"),
    _("Not set"),
    _("Path"),
    _("POST Data"),
    _("Session key hash (sha256)"),
    _("The time when access attempt expires and is no longer valid."),
    _("User Agent"),
    _("Username"),
)
