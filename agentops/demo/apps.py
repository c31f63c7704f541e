from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo: its agents, traffic and the seed_demo and simulate_traffic commands. No models."""

    name = "agentops.demo"
    label = "demo"
    verbose_name = "Demo"
