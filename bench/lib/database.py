"""Scratch PostgreSQL databases of a benchmark run, reached with plain psycopg."""

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


def database_name(url: str) -> str:
    """The database a postgres:// URL points at."""
    return urlsplit(url).path.lstrip("/")


def _maintenance_url(url: str) -> str:
    """The same server's `postgres` database, from which others are dropped and created."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres"))


def recreate(url: str) -> None:
    """Drop the database (closing its connections) and create it empty."""
    name = sql.Identifier(database_name(url))
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def truncate_all(url: str, *, keep: tuple[str, ...] = ("django_migrations",)) -> None:
    """Empty every table of the public schema but the kept ones, resetting sequences."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            if row[0] not in keep
        ]
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )


def scalar(conn: psycopg.Connection, query: str, params: tuple = ()) -> int:
    """The first column of the first row of a query."""
    row = conn.execute(query, params).fetchone()
    return row[0] if row else 0
