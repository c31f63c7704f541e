"""The display formatters as template filters, built into every template (settings.TEMPLATES builtins):
``{{ seconds|duration }}``, ``{{ seconds|age }}``, ``{{ n|tokens }}``, ``{{ n|number }}``, ``{{ value|usd }}``
(``{{ value|usd:6 }}`` for six decimals), ``{{ price|usd_rate }}``."""

from django import template

from agentops.lib import display

register = template.Library()
register.filter("duration", display.duration)
register.filter("age", display.age)
register.filter("tokens", display.tokens)
register.filter("number", display.number)
register.filter("usd_rate", display.usd_rate)


@register.filter("usd")
def usd(value, places=None):
    return display.usd(value, int(places) if places not in (None, "") else None)
