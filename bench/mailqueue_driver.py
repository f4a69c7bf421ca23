"""Mailqueue as a contestant: scratch database and Redis, public services, real worker processes.

Everything here goes through Mailqueue's public interfaces (`mailqueue.services`,
`templates_app.services`, `manage.py rqworker`, gunicorn on `config.wsgi`, the REST API), so the
harness keeps working whatever the delivery engine's internals become.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lib import database, procs, workload

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailqueue_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
FINAL_STATUSES = ("sent", "failed", "cancelled")
# Kept by every reset: Django's own bookkeeping, which migrations and post_migrate wrote.
KEEP_TABLES = ("django_migrations", "django_content_type", "auth_permission")


def base_env() -> dict[str, str]:
    """Environment of the web and worker processes: production settings, scratch services.

    The caller's MAILQUEUE_* variables (worker concurrency, chunk size, ...) pass through, as
    does the rest of the caller's environment; only what the benchmark must pin is overridden.
    """
    return {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "EMAIL_PROVIDERS": "smtp",
        "DEFAULT_FROM_EMAIL": workload.FROM_EMAIL,
    }


def setup_django() -> None:
    """Configure Django in this process for the scratch database (creates the emails)."""
    os.environ.update(base_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def recreate_database(log: Path) -> None:
    """Drop and create the scratch database, then migrate it (in a child process)."""
    database.recreate(DATABASE_URL)
    procs.run([PYTHON, "manage.py", "migrate", "--no-input"], env=base_env(), log=log, cwd=ROOT)


@dataclass(frozen=True)
class Tenant:
    """The API client every bench email belongs to, and its plaintext key for the REST API."""

    client: object
    api_key: str


def reset() -> Tenant:
    """Empty the scratch database and Redis DB, then create the bench template and API key."""
    import redis
    from django.core.cache import caches
    from django.db import connections

    from mailqueue.services import api_key_create
    from templates_app.services import template_create

    connections.close_all()
    database.truncate_all(DATABASE_URL, keep=KEEP_TABLES)
    redis.Redis.from_url(REDIS_URL).flushdb()
    for cache in caches.all():
        cache.clear()
    template_create(
        slug=workload.TEMPLATE_SLUG,
        name="Bench",
        subject=workload.SUBJECT,
        html=workload.HTML,
        text=workload.TEXT,
        variables=["name", "order"],
    )
    issued = api_key_create(client_name="bench", scopes=["send", "read"])
    return Tenant(client=issued.api_key.client, api_key=issued.plaintext)


def enqueue_batches(
    tenant: Tenant, *, count: int, per_call: int, priority: str = "default", first: int = 0
) -> float:
    """Create count emails with batch_create, per_call recipients a call; seconds taken."""
    from mailqueue.services import BatchRecipient, batch_create

    started = time.perf_counter()
    for start in range(first, first + count, per_call):
        size = min(per_call, first + count - start)
        batch_create(
            client=tenant.client,
            template=workload.TEMPLATE_SLUG,
            priority=priority,
            context={"items": workload.ITEMS},
            recipients=[
                BatchRecipient(
                    to=[workload.address(n)], context=workload.recipient_context(n), metadata={}
                )
                for n in range(start, start + size)
            ],
        )
    return time.perf_counter() - started


def enqueue_singles(
    tenant: Tenant, *, count: int, priority: str = "default", first: int = 0
) -> tuple[float, object]:
    """Create count emails one email_create call each, like API traffic: seconds, last email."""
    from mailqueue.services import email_create

    started = time.perf_counter()
    last = None
    for n in range(first, first + count):
        last = email_create(
            client=tenant.client,
            to=[workload.address(n)],
            template=workload.TEMPLATE_SLUG,
            context=workload.context_for(n),
            priority=priority,
        )
    return time.perf_counter() - started, last


def count_final() -> int:
    """Emails that reached a final state (sent, failed or cancelled)."""
    from mailqueue.models import EmailJob

    return EmailJob.objects.filter(status__in=FINAL_STATUSES).count()


def count_by_status() -> dict[str, int]:
    """How many emails are in each status."""
    from django.db.models import Count

    from mailqueue.models import EmailJob

    rows = EmailJob.objects.values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def start_workers(number: int, *, smtp_port: int, log: Path, burst: bool = True) -> list:
    """Start real `rqworker high default low` processes delivering to the SMTP sink."""
    env = {**base_env(), "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}"}
    args = [PYTHON, "manage.py", "rqworker", "high", "default", "low"]
    if burst:
        args.append("--burst")
    return [procs.start(args, env=env, log=log, cwd=ROOT) for _ in range(number)]


def deliver(*, workers: int, expected: int, smtp_port: int, log: Path) -> dict:
    """Start workers and wait until every email is final: seconds from start, and statuses."""
    cpu, db_cpu = procs.children_cpu_seconds(), procs.database_cpu_seconds()
    started = time.monotonic()
    processes = start_workers(workers, smtp_port=smtp_port, log=log)
    try:
        done = procs.wait_until(
            lambda: count_final() >= expected,
            timeout=max(120.0, expected / 10),
            interval=0.02,
            processes=processes,
            what=f"{expected} Mailqueue emails final",
        )
        db_cpu = procs.database_cpu_seconds() - db_cpu
    finally:
        for process in processes:
            procs.stop(process)
    return {
        "seconds": done - started,
        "cpu_seconds": procs.children_cpu_seconds() - cpu,
        "database_cpu_seconds": db_cpu,
        "statuses": count_by_status(),
    }


def start_web(*, port: int, workers: int, log: Path) -> subprocess.Popen:
    """Start gunicorn on the project's WSGI app, as the Docker image does (sync workers)."""
    return procs.start_gunicorn(
        "config.wsgi:application", port=port, workers=workers, env=base_env(), log=log, cwd=ROOT
    )


def email_body(number: int) -> dict:
    """JSON body of POST /api/v1/emails/."""
    return {
        "to": [workload.address(number)],
        "template": workload.TEMPLATE_SLUG,
        "context": workload.context_for(number),
    }


def batch_body(number: int, size: int) -> dict:
    """JSON body of POST /api/v1/batches/ with size recipients."""
    return {
        "template": workload.TEMPLATE_SLUG,
        "context": {"items": workload.ITEMS},
        "recipients": [
            {"to": [workload.address(n)], "context": workload.recipient_context(n)}
            for n in range(number * size, (number + 1) * size)
        ],
    }
