from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = gettext_lazy("Budgets and cost")
