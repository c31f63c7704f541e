"""Joins the two 0008s of issue 16: the Agents screen's key limits and role (h16-agents) and the agent's
``gateway_human`` (h16-hold)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('agentops', '0008_agent_admin_and_key_limits'),
        ('agentops', '0008_agent_gateway_human'),
    ]

    operations = [
    ]
