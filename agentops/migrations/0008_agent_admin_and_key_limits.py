"""Issue 16, item 5: the Agents screen. Per-key expiry, allowed models and rate limit; the agent_admin role's
group exists on every install (as 0006_role_groups made the first three)."""

import django.core.validators
from django.db import migrations, models


AGENT_ADMIN = "agent_admin"  # agentops.accounts.roles.AGENT_ADMIN at the time of writing


def create_agent_admin_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name=AGENT_ADMIN)


class Migration(migrations.Migration):

    dependencies = [
        ('agentops', '0007_api_key_max_in_flight'),
        ('auth', '0012_alter_user_first_name_max_length'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='allowed_models',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='apikey',
            name='expires_at',
            field=models.DateTimeField(blank=True, help_text='refused like a revoked key from then on', null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='rate_per_minute',
            field=models.PositiveIntegerField(blank=True, help_text='requests a minute on /api/v1 and /v1; empty = the global default', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000000)]),
        ),
        migrations.RunPython(create_agent_admin_group, migrations.RunPython.noop),
    ]
