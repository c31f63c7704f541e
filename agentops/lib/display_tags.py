"""The display formatters as template filters, built into every template (settings.TEMPLATES builtins):
``{{ seconds|duration }}``, ``{{ seconds|age }}``, ``{{ n|tokens }}``."""

from django import template

from agentops.lib import display

register = template.Library()
register.filter("duration", display.duration)
register.filter("age", display.age)
register.filter("tokens", display.tokens)
