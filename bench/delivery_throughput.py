"""Delivery throughput of one in-process worker, printed as numbers (no assertions).

A quick check while working on the engine; `make bench` (bench/run.py) is the full, side-by-side
benchmark with real worker processes and peers.

    .venv/bin/python bench/delivery_throughput.py    # defaults: 2000 batch + 500 single emails
    .venv/bin/python bench/delivery_throughput.py --batch 5000 --single 1000 --provider capture

Uses a scratch PostgreSQL database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/mailqueue_bench, dropped and created anew each run), Redis DB 13
(BENCH_REDIS_URL), and an aiosmtpd sink in its own process as the SMTP provider. It measures the
time a burst worker (`MailqueueWorker`, no fork) takes to claim, render and send every email.
"""

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailqueue_bench"
)
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("EMAIL_PROVIDERS", "smtp")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Block until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def recreate_database() -> None:
    """Start from an empty scratch database every run."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2000, help="emails sent as batches")
    parser.add_argument("--single", type=int, default=500, help="emails sent one job each")
    parser.add_argument("--provider", default=os.environ["EMAIL_PROVIDERS"])
    args = parser.parse_args()
    os.environ["EMAIL_PROVIDERS"] = args.provider

    from bench.lib.database import lock_scratch
    from bench.lib.procs import database_cpu_seconds

    # Held until the process exits: `make bench` uses the same scratch database and Redis DB.
    _lock = lock_scratch([DATABASE_URL, os.environ["REDIS_URL"]])
    recreate_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", "--no-input", verbosity=0)

    from mailqueue.models import Batch, EmailJob
    from mailqueue.scheduling import connection
    from mailqueue.services import BatchRecipient, api_key_create, batch_create, email_create
    from templates_app.models import EmailTemplate
    from templates_app.services import template_create
    from tests.helpers import run_worker

    # The SMTP server runs in its own process (aiosmtpd's discarding Sink), so its work does not
    # count against the worker being measured.
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ]
    )
    wait_for_port(port)
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": port}
    connection().flushdb()
    EmailJob.objects.all().delete()
    Batch.objects.all().delete()
    EmailTemplate.objects.filter(slug="bench").delete()
    template_create(
        slug="bench",
        name="Bench",
        subject="Order {{ order }} for {{ name }}",
        html="<p>Hello {{ name }}</p>{% for i in items %}<li>{{ i }}</li>{% endfor %}",
        text="Hello {{ name }}",
        variables=["name", "order"],
    )
    client = api_key_create(client_name="bench", scopes=["send"]).api_key.client
    results = []

    if args.batch:
        started = time.perf_counter()
        for start in range(0, args.batch, 1000):
            size = min(1000, args.batch - start)
            batch_create(
                client=client,
                template="bench",
                context={"items": ["a", "b", "c"]},
                recipients=[
                    BatchRecipient(
                        to=[f"user{start + i}@example.com"],
                        context={"name": f"User {i}", "order": start + i},
                        metadata={},
                    )
                    for i in range(size)
                ],
            )
        accepted = time.perf_counter() - started
        started, cpu, db_cpu = time.perf_counter(), time.process_time(), database_cpu_seconds()
        run_worker()
        elapsed = time.perf_counter() - started
        cpu, db_cpu = time.process_time() - cpu, database_cpu_seconds() - db_cpu
        results.append(("batch", args.batch, accepted, elapsed, cpu, db_cpu))

    if args.single:
        started = time.perf_counter()
        for i in range(args.single):
            email_create(
                client=client,
                to=[f"single{i}@example.com"],
                template="bench",
                context={"name": "Single", "order": i, "items": []},
            )
        accepted = time.perf_counter() - started
        started, cpu, db_cpu = time.perf_counter(), time.process_time(), database_cpu_seconds()
        run_worker()
        elapsed = time.perf_counter() - started
        cpu, db_cpu = time.process_time() - cpu, database_cpu_seconds() - db_cpu
        results.append(("single", args.single, accepted, elapsed, cpu, db_cpu))

    sent = EmailJob.objects.filter(status="sent").count()
    sink.terminate()
    sink.wait()
    print(f"provider={args.provider} database={settings.DATABASES['default']['ENGINE']}")
    for mode, count, accepted, elapsed, cpu, db_cpu in results:
        print(
            f"{mode:>6}: {count} emails accepted in {accepted:.2f}s "
            f"({count / accepted:.0f}/s), delivered by one worker in {elapsed:.2f}s "
            f"({count / elapsed:.0f} emails/s, {elapsed / count * 1000:.2f} ms/email, "
            f"worker CPU {cpu / count * 1000:.2f} ms/email, "
            f"PostgreSQL CPU {db_cpu / count * 1000:.2f} ms/email)"
        )
    print(f"sent: {sent} of {args.batch + args.single}")


if __name__ == "__main__":
    main()
