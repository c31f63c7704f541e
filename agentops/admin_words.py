"""Admin words other people's code shows but their Chinese catalogs lack: Django 5.2's own (its zh_Hans
catalog predates them) and django-axes' (Axes › Access attempts, Access logs, Access failures: it ships no
Chinese catalog). Listing them here puts them in our catalog (`make messages` extracts them), and Django takes
a translation from LOCALE_PATHS before an app's own, so these admin pages read in Chinese too. Never
imported: only the extractor reads this file. Each msgid must stay exactly as the other code writes it."""

from django.utils.translation import gettext_lazy as _

DJANGO_ADMIN_WORDS = (
    _("Model name"),  # admin/app_list.html: the column headers a screen reader reads
    _("Add link"),
    _("Change or view list link"),
    _("After you’ve created a user, you’ll be able to edit more user options."),  # admin/auth/user/add_form.html
)

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
