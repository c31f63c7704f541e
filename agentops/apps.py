from django.apps import AppConfig


class AgentopsConfig(AppConfig):
    name = "agentops"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        # The project's Celery app becomes the current one in every process (web, worker, command), so that
        # agentops/lib/queue.py sends tasks by name through it.
        from agentops import celery  # noqa: F401  (ready() is where Django wants the wiring done)
