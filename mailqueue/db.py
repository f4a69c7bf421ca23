"""Hand-built SQL for the few statements every request or email runs.

The ORM compiles each INSERT and SELECT anew and binds every value on its own: for the 40
columns of an email that costs more CPU than PostgreSQL spends on the statement. These helpers
write each statement's text once per model, and send rows as one JSON parameter that
PostgreSQL unpacks (`jsonb_to_recordset`). Values are what the fields hold after `pre_save`
(UUIDs, datetimes, dates, decimals and bytes are encoded as PostgreSQL reads them back), so a
field whose database value differs from its Python value (a custom field with its own
`get_db_prep_value`) must not be written this way. Loading goes through `from_db_value`, as the
ORM does. Databases other than PostgreSQL take the ORM's own path.
"""

import json
from datetime import date, time
from decimal import Decimal
from functools import cache
from uuid import UUID

from django.db import connection, models
from django.db.backends.utils import CursorWrapper


def insert_one(instance: models.Model) -> None:
    """INSERT one instance whose primary key is already set (a UUID): one constant statement."""
    insert_rows(type(instance), [instance])


def insert_rows(model: type[models.Model], rows: list[models.Model]) -> None:
    """INSERT unsaved instances whose primary keys are already set, in one statement.

    On PostgreSQL the rows travel as one JSON parameter (`json_recordset`): for a batch of 100
    emails of 40 columns that is one C call where binding 4,000 values costs milliseconds.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        model._base_manager.bulk_create(rows, batch_size=500)
        return
    table = connection.ops.quote_name(model._meta.db_table)
    with server_binding_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} {column_list(model)} "  # noqa: S608 (quoted names only)
            f"SELECT * FROM {json_recordset(model, 'new_row')}",
            [json_dumps(json_rows(model, rows))],
        )
    for row in rows:
        row._state.adding = False
        row._state.db = connection.alias


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
    converters = _converters(model, connection.vendor)
    count = len(fields)
    result = []
    for row in rows:
        values = list(row[:count])
        for index, convert, column in converters:
            values[index] = convert(values[index], column, connection)
        instance = model.from_db(connection.alias, attnames, values)
        result.append((instance, list(row[count : count + extra])))
    return result


@cache
def _converters(model: type[models.Model], vendor: str) -> list[tuple]:
    """(index, converter, column) for every value the ORM would convert when loading the model:
    the backend's (SQLite's datetimes become aware) and then the field's (JSON is parsed)."""
    converters = []
    for index, field in enumerate(model._meta.concrete_fields):
        column = field.get_col(model._meta.db_table)
        for convert in [
            *connection.ops.get_db_converters(column),
            *column.get_db_converters(connection),
        ]:
            converters.append((index, convert, column))
    return converters


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
    if isinstance(value, date | time):
        # isoformat keeps the microseconds (Django's encoder cuts them to milliseconds).
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
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
