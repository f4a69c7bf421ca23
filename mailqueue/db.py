"""Hand-built SQL for the few statements every request or email runs, with the ORM's own values.

The ORM compiles each INSERT and SELECT anew: for the 40 columns of an email that costs more CPU
than PostgreSQL spends on the statement. These helpers write the statement text once per model
and column list, and still take every value through the fields (`pre_save`,
`get_db_prep_save`, `from_db_value`), so what is stored and loaded is what the ORM would store
and load. They work on every database Django supports.
"""

import json
from datetime import datetime
from functools import cache
from uuid import UUID

from django.db import connection, models
from django.db.backends.utils import CursorWrapper


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
    rows = select_instances(model, sql, params, extra=extra)
    return rows[0] if rows else None


def select_instances(
    model: type[models.Model], sql: str, params: list, *, extra: int = 0
) -> list[tuple[models.Model, list]]:
    """Run `sql` (selecting `select_columns(model)` then `extra` more columns): every row as
    (instance, extra values)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    fields = model._meta.concrete_fields
    attnames = [f.attname for f in fields]
    converters = [
        (index, field.from_db_value)
        for index, field in enumerate(fields)
        if hasattr(field, "from_db_value")
    ]
    count = len(fields)
    result = []
    for row in rows:
        values = list(row[:count])
        for index, convert in converters:
            values[index] = convert(values[index], None, connection)
        instance = model.from_db(connection.alias, attnames, values)
        result.append((instance, list(row[count : count + extra])))
    return result


@cache
def select_columns(model: type[models.Model], alias: str) -> str:
    """Every concrete column of a model, qualified by a table alias, in field order."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def server_binding_cursor() -> CursorWrapper:
    """A PostgreSQL cursor that sends values apart from the statement instead of quoting them in.

    Django's default psycopg cursor binds on the client: it quotes every value into the SQL
    text in Python, which for a statement with hundreds of values costs more CPU than the
    database spends on it. The cursor is wrapped like Django's own, so query logging and
    error translation behave the same.
    """
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(ServerBindingCursor(connection.connection))


def json_rows(model: type[models.Model], rows: list[models.Model]) -> list[dict]:
    """Unsaved instances as `{column: value}` dicts for `json_recordset` (`pre_save` applied)."""
    fields = _insert_fields(model)
    return [{f.column: f.pre_save(row, add=True) for f in fields} for row in rows]


def json_dumps(value) -> str:
    """JSON text for `json_recordset`: UUIDs and datetimes as PostgreSQL reads them back."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value):
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        # isoformat keeps the microseconds (Django's encoder cuts them to milliseconds).
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@cache
def json_recordset(model: type[models.Model], alias: str) -> str:
    """`jsonb_to_recordset(%s::jsonb) AS alias (column type, ...)` over the model's columns.

    Rows travel as one JSON parameter: the statement text is the same for any number of rows,
    and encoding it is one C call (psycopg adapts lists and many parameters in Python).
    """
    quote = connection.ops.quote_name
    types = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in _insert_fields(model))
    return f"jsonb_to_recordset(%s::jsonb) AS {alias} ({types})"


@cache
def column_list(model: type[models.Model]) -> str:
    """`(column, ...)` of the columns an INSERT of the model writes."""
    return f"({_column_list(model)})"


def _insert_fields(model: type[models.Model]) -> list[models.Field]:
    # Every concrete field but an auto-increment primary key (the database assigns that one).
    return [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]


@cache
def _column_list(model: type[models.Model]) -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(f.column) for f in _insert_fields(model))
