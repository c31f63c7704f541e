"""The role groups (reviewer, expert, budget_admin) exist on every install, not only after seed_demo: a
production deployment assigns users to them in /admin/ right after `migrate`."""

from django.db import migrations

ROLE_GROUPS = ("reviewer", "expert", "budget_admin")  # agentops.accounts.roles.ROLE_GROUPS at the time of writing


def create_role_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("agentops", "0005_gateway"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_role_groups, migrations.RunPython.noop)]
