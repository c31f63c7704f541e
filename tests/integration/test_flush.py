"""The transactional tests' flush (tests/conftest.py): every model table empty afterwards, as Django's flush
leaves it, with the content types and permissions kept (the same rows and ids, no post_migrate)."""

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from agentops.config.seed import seed_runtime_defaults
from budgets.models import Budget, UsageRecord
from tests.conftest import KEPT_BY_FLUSH, _fast_flush
from tests.fixtures.factories import make_budget, seed_prices
from tests.fixtures.people import ALICE

pytestmark = pytest.mark.django_db(transaction=True)


def rows_per_table() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.django_table_names(only_existing=True, include_views=False):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


def test_the_flush_empties_every_model_table_but_keeps_content_types_and_permissions(make_key):
    seed_runtime_defaults(apps.get_model)
    seed_prices()
    make_budget("flushed", scope="agent", scope_key="t-steps", limit_tokens=1000)
    make_key("t-steps")  # an agent and its key (foreign keys between the tables)
    ALICE.user()
    kinds = dict(ContentType.objects.values_list("pk", "model"))
    permissions = Permission.objects.count()
    before = rows_per_table()
    assert before["budgets_budget"] >= 1 and before["auth_user"] >= 1 and before["agentops_apikey"] >= 1, before

    _fast_flush("default")

    after = rows_per_table()
    assert {table: n for table, n in after.items() if n and table not in KEPT_BY_FLUSH} == {}
    assert dict(ContentType.objects.values_list("pk", "model")) == kinds and len(kinds) > 30
    assert Permission.objects.count() == permissions > 100
    assert not Budget.objects.exists() and not UsageRecord.objects.exists()
