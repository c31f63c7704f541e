from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class AgentopsConfig(AppConfig):
    name = "agentops"
    verbose_name = gettext_lazy("Agent runs")

    def ready(self) -> None:
        # ready() is where Django wants the wiring done: every process (web, Celery worker, management
        # command, test) runs it once its models are loaded, and not before. The project's Celery app becomes
        # the current one (agentops/lib/queue.py sends tasks by name through it), and runs get their ports to
        # the rooms above them (review's escalator, the budgets ledger, the guard), which import models.
        from agentops import celery, wiring  # noqa: F401, PLC0415

        wiring.install()
