"""How late scheduled emails leave: the real `rqscheduler` and `rqworker`, numbers printed.

    .venv/bin/python bench/schedule_latency.py [--emails 30]

Starts both commands as processes against a scratch PostgreSQL database (BENCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/mailqueue_sched_bench, dropped and created anew) and
Redis DB 13 (BENCH_REDIS_URL), schedules emails at sub-second offsets 3 to ~14 s ahead, waits
until all are sent (into the capture provider), and prints how long after `send_at` each left:
min, median, p95, max, and how many left early (the promise is none, and about a second late).
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailqueue_sched_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
ENV = {
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "SECRET_KEY": "bench",
    "DEBUG": "0",
    "EMAIL_PROVIDERS": "capture",
    "LOG_LEVEL": "WARNING",
    "DJANGO_SETTINGS_MODULE": "config.settings",
}
os.environ.update(ENV)


def recreate_database() -> None:
    """Start from an empty scratch database every run."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    """Run the measurement and print the results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=30, help="scheduled emails to measure")
    args = parser.parse_args()

    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", "--no-input", verbosity=0)
    from mailqueue.models import EmailJob, EmailStatus
    from mailqueue.scheduling import connection
    from mailqueue.services import api_key_create, email_create

    connection().flushdb()
    client = api_key_create(client_name="bench", scopes=["send"]).api_key.client
    env = {**os.environ, **ENV}
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        for command in (["rqscheduler"], ["rqworker", "high", "default", "low"])
    ]
    try:
        time.sleep(3)  # let both processes register before the first send_at
        start = timezone.now() + timedelta(seconds=3)
        ids = [
            email_create(
                client=client,
                to=[f"user{n}@example.com"],
                subject="On time",
                text="x",
                send_at=start + timedelta(seconds=n * 0.37),
            ).pk
            for n in range(args.emails)
        ]
        deadline = time.monotonic() + 30 + args.emails * 0.37
        while EmailJob.objects.filter(pk__in=ids, status=EmailStatus.SENT).count() < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit("not every scheduled email was sent in time; see the logs")
            time.sleep(0.2)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)

    lateness = sorted(
        (sent_at - send_at).total_seconds()
        for send_at, sent_at in EmailJob.objects.filter(pk__in=ids).values_list(
            "send_at", "sent_at"
        )
    )
    early = sum(1 for value in lateness if value < 0)
    p95 = lateness[min(len(lateness) - 1, math.ceil(len(lateness) * 0.95) - 1)]
    print(
        f"{len(lateness)} scheduled emails: sent after send_at by min {lateness[0]:.2f}s, "
        f"median {statistics.median(lateness):.2f}s, p95 {p95:.2f}s, max {lateness[-1]:.2f}s; "
        f"early: {early}"
    )


if __name__ == "__main__":
    main()
