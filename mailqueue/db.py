"""Hand-built SQL for the few statements every request or email runs, with the ORM's own values.

The ORM compiles each INSERT and SELECT anew: for the 40 columns of an email that costs more CPU
than PostgreSQL spends on the statement. These helpers write the statement text once per model
and column list, and still take every value through the fields (`pre_save`,
`get_db_prep_save`, `from_db_value`), so what is stored and loaded is what the ORM would store
and load. They work on every database Django supports.
"""

from functools import cache

from django.db import connection, models


def insert_values(model: type[models.Model], rows: list[models.Model]) -> tuple[str, list]:
    """`(columns) VALUES (...), ...` and its parameters for INSERTing unsaved instances."""
    fields = _insert_fields(model)
    params = []
    for row in rows:
        params += [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return f"({_column_list(model)}) VALUES {', '.join([placeholders] * len(rows))}", params


def insert_one(instance: models.Model) -> None:
    """INSERT one instance whose primary key is already set (a UUID): one constant statement."""
    model = type(instance)
    sql, params = insert_values(model, [instance])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} {sql}", params
        )
    instance._state.adding = False
    instance._state.db = connection.alias


def select_instance(model: type[models.Model], sql: str, params: list, *, extra: int = 0):
    """Run `sql` (selecting `select_columns(model)` then `extra` more columns) and return the
    first row as (instance, extra values), or None when there is no row."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    fields = model._meta.concrete_fields
    values = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, row, strict=False)
    ]
    instance = model.from_db(connection.alias, [f.attname for f in fields], values)
    return instance, list(row[len(fields) : len(fields) + extra])


@cache
def select_columns(model: type[models.Model], alias: str) -> str:
    """Every concrete column of a model, qualified by a table alias, in field order."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def _insert_fields(model: type[models.Model]) -> list[models.Field]:
    # Every concrete field but an auto-increment primary key (the database assigns that one).
    return [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]


@cache
def _column_list(model: type[models.Model]) -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(f.column) for f in _insert_fields(model))
