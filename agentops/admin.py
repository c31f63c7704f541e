"""The admin site's pages for the ``agentops`` app live in their rooms; Django discovers them through here."""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.utils.translation import gettext_lazy

from agentops.config import admin as config_admin
from agentops.keys import admin as keys_admin

__all__ = ["config_admin", "keys_admin"]


class TranslatedAccessAttemptAdmin(AccessAttemptAdmin):
    """django-axes' list of sign-in attempts, its "status" column titled in the reader's language (axes leaves
    it to Django, which titles it "Status" in every language)."""

    @admin.display(description=gettext_lazy("status"))
    def status(self, obj):
        return super().status(obj)


if admin.site.is_registered(AccessAttempt):  # AXES_ENABLE_ADMIN
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, TranslatedAccessAttemptAdmin)
