from django.db import migrations

from budgets.seed import seed_budget_defaults


def seed(apps, schema_editor):
    seed_budget_defaults(apps.get_model)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
