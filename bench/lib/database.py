"""Scratch PostgreSQL databases of a benchmark run, reached with plain psycopg."""

import zlib
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


def lock_scratch(resources: list[str]) -> psycopg.Connection:
    """Hold a PostgreSQL advisory lock per scratch resource (database or Redis URL) of a run.

    Two benchmarks on the same scratch databases or Redis DB would empty each other's tables
    mid-measure; the second one stops at once instead. The locks live as long as the returned
    connection (the process), so a killed run never leaves one behind.
    """
    conn = psycopg.connect(_maintenance_url(resources[0]), autocommit=True)
    for resource in resources:
        key = zlib.crc32(f"mailqueue-bench:{resource}".encode())
        if not scalar(conn, "SELECT pg_try_advisory_lock(%s)", (key,)):
            conn.close()
            raise RuntimeError(f"another benchmark is using {resource}: wait for it to finish")
    return conn
