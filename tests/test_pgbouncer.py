"""Mailqueue behind PgBouncer in transaction mode (DATABASE_PGBOUNCER=1).

A private pgbouncer (chaos/pgbouncer.py) on a free port pools this test's database with fewer
server connections than there are clients, so consecutive transactions of one process land on
different server connections, as in production.
"""

import runpy
from datetime import timedelta
from pathlib import Path

import django_rq
import environ
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from chaos.pgbouncer import private_pgbouncer
from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue
from mailqueue.services import email_create
from tests.live import live_env, process_logs, processes, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bouncer():
    """A pgbouncer (transaction mode, two server connections) in front of this test's server."""
    db = connection.settings_dict
    with private_pgbouncer(
        server_host=db["HOST"] or "127.0.0.1",
        server_port=int(db["PORT"] or 5432),
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or "",
        pool_size=2,
    ) as running:
        yield running


def bounced_transactions(bouncer, database: str) -> int:
    """Transactions pgbouncer has passed to this database so far (`SHOW STATS`)."""
    rows = bouncer.admin("SHOW STATS")
    header = ["database", "total_xact_count"]
    return sum(int(row[1]) for row in rows if row[0] == database and len(row) > len(header))


@pytest.mark.django_db(transaction=True)
def test_workers_and_scheduler_through_pgbouncer_send_each_email_once(
    issued_key, smtp_sink, bouncer, tmp_path
):
    """Three workers claim 150 emails, each listed in two jobs, through PgBouncer in transaction
    mode with two server connections (FOR UPDATE SKIP LOCKED claims): each email is sent once;
    the scheduler releases a scheduled email through it too."""
    client = issued_key.api_key.client
    emails = [
        email_create(client=client, to=[f"user{n}@example.com"], subject="Hi", text="Hello")
        for n in range(150)
    ]
    ids = [str(email.pk) for email in emails]
    # Two jobs per chunk, the second in the opposite order, so workers race for the same rows.
    django_rq.get_queue("default").empty()
    deliveries_enqueue(
        DeliveryJob(job_id=f"{name}-{start}", email_ids=tuple(chunk), priority="default")
        for start in range(0, 150, 15)
        for name, chunk in (
            ("first", ids[start : start + 15]),
            ("again", ids[start : start + 15][::-1]),
        )
    )
    database = connection.settings_dict["NAME"]
    env = live_env(
        DATABASE_URL=bouncer.url(database),
        DATABASE_PGBOUNCER="1",
        EMAIL_PROVIDERS="smtp",
        EMAIL_URL=f"smtp://{smtp_sink.host}:{smtp_sink.port}",
    )
    worker = ["rqworker", "high", "default", "low"]
    with processes([worker, worker, worker, ["rqscheduler"]], env, tmp_path):
        later = email_create(
            client=client,
            to=["later@example.com"],
            subject="Later",
            text="Hello",
            send_at=timezone.now() + timedelta(seconds=2),
        )
        wait_until(
            lambda: EmailJob.objects.filter(status=EmailStatus.SENT).count() == 151,
            timeout=45,
            what="151 emails sent",
            logs=tmp_path,
        )

    recipients = [m.rcpt_tos[0] for m in smtp_sink.messages]
    assert len(recipients) == len(set(recipients)) == 151, process_logs(tmp_path)
    assert DeliveryAttempt.objects.count() == 151
    later.refresh_from_db()
    assert later.sent_at >= later.send_at
    # Everything went through pgbouncer, four processes sharing its two server connections:
    # at least one transaction per job, and more clients logged in than server connections.
    log = bouncer.log()
    assert bounced_transactions(bouncer, database) >= 20, log[-3000:]
    assert log.count(f"login attempt: db={database}") >= 4, log[-3000:]
    assert log.count("new connection to server") <= 2, log[-3000:]
    assert "prepared statement" not in process_logs(tmp_path)


def _load_settings(monkeypatch, **variables: str) -> dict:
    """config/settings.py evaluated afresh with these variables."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(environ.Env, "read_env", lambda *args, **kwargs: None)
    return runpy.run_path(str(ROOT / "config" / "settings.py"))


def _same_query_from_two_clients(url: str, options: dict) -> None:
    """Two connections take turns running one statement eight times each (psycopg prepares a
    statement on its fifth run), through one shared server connection."""
    first, second = (psycopg.connect(url, autocommit=True, **options) for _ in range(2))
    try:
        for _ in range(8):
            for conn in (first, second):
                conn.execute("SELECT %s::int + 1", [1]).fetchone()
    finally:
        first.close()
        second.close()


@pytest.mark.django_db
def test_the_switch_is_what_keeps_psycopg_working_behind_transaction_pooling(monkeypatch, settings):
    """Without DATABASE_PGBOUNCER psycopg's prepared statements collide on PgBouncer's shared
    server connection; with it they are off, and server-side cursors too."""
    db = connection.settings_dict
    with private_pgbouncer(
        server_host=db["HOST"] or "127.0.0.1",
        server_port=int(db["PORT"] or 5432),
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or "",
        pool_size=1,
    ) as bouncer:
        url = bouncer.url(db["NAME"]).replace("postgres://", "postgresql://", 1)
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.delenv("DATABASE_PGBOUNCER", raising=False)
        plain = _load_settings(monkeypatch)["DATABASES"]["default"]
        switched = _load_settings(monkeypatch, DATABASE_PGBOUNCER="1")["DATABASES"]["default"]

        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            _same_query_from_two_clients(url, plain.get("OPTIONS", {}))
        _same_query_from_two_clients(url, switched["OPTIONS"])

    assert switched["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert not plain.get("DISABLE_SERVER_SIDE_CURSORS", False)
    # Persistent connections to PgBouncer stay: they cost nothing on the server.
    assert switched["CONN_MAX_AGE"] == plain["CONN_MAX_AGE"]
