"""GIN indexes for `to` and `tags` containment filters; PostgreSQL only (SQLite has no GIN)."""

from django.db import migrations

INDEXES = {
    "email_to_gin": "email_jobs USING gin (to_addresses jsonb_path_ops)",
    "email_tags_gin": "email_jobs USING gin (tags jsonb_path_ops)",
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("mailqueue", "0001_initial")]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
