from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = gettext_lazy("Human review")
