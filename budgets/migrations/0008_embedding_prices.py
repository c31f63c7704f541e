"""The embedding models' prices (per 1K input tokens, no output), each from the date its price took effect:
text-embedding-3-small 0.00002 and text-embedding-3-large 0.00013 (2024-01-25), text-embedding-ada-002 0.0001
(2023-06-13). Idempotent: a row already there for a model and date is kept as it is."""

from decimal import Decimal

from django.db import migrations

from budgets.seed import seed_price_table

# Written out here, not read from budgets.seed, so this migration always adds the same rows.
ROWS = [
    ("text-embedding-3-small", Decimal("0.00002"), Decimal("0"), None, "2024-01-25"),
    ("text-embedding-3-large", Decimal("0.00013"), Decimal("0"), None, "2024-01-25"),
    ("text-embedding-ada-002", Decimal("0.0001"), Decimal("0"), None, "2023-06-13"),
]


def add_embedding_prices(apps, schema_editor):
    seed_price_table(apps.get_model, ROWS)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0007_price_matching")]

    operations = [migrations.RunPython(add_embedding_prices, migrations.RunPython.noop)]
