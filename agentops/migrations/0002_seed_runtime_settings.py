"""Seed the runtime settings with the defaults of DESIGN.md §11 (see agentops/config/seed.py)."""

from django.db import migrations

from agentops.config.seed import seed_runtime_defaults


def seed(apps, schema_editor):
    seed_runtime_defaults(apps.get_model)


class Migration(migrations.Migration):
    dependencies = [("agentops", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
