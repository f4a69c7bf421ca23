"""django-post_office 3.11 as a peer: its own virtualenv, project and scratch database.

Emails are queued with post_office's public API (`mail.send`, `mail.send_many`, by the
`bench_enqueue` command of bench/peers/post_office_project) and sent by its
`send_queued_mail` command, timed from the command's start until every email is sent or
failed in the database.
"""

import json
import os
import time
from pathlib import Path

import psycopg

from bench.lib import database, procs

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "post_office_project"
VENV = HERE.parent / ".venv-peers"
PYTHON = VENV / "bin" / "python"
DATABASE_URL = os.environ.get(
    "BENCH_PO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/post_office_bench"
)
# post_office's STATUS: sent=0, failed=1, queued=2, requeued=3.
FINAL_COUNT = "SELECT count(*) FROM post_office_email WHERE status IN (0, 1)"


def check_installed() -> None:
    """Fail with a clear message when the peers' virtualenv is missing."""
    if not PYTHON.exists():
        raise RuntimeError(f"{VENV} is missing: run `make bench` (it installs it)")


def env(smtp_port: int) -> dict[str, str]:
    """Environment of the peer's commands."""
    return {
        **os.environ,
        "BENCH_PO_DATABASE_URL": DATABASE_URL,
        "BENCH_SMTP_PORT": str(smtp_port),
        "DJANGO_SETTINGS_MODULE": "po_project.settings",
    }


def recreate_database(*, smtp_port: int, log: Path) -> None:
    """Drop and create the peer's scratch database, then migrate it."""
    database.recreate(DATABASE_URL)
    procs.run(
        [PYTHON, "manage.py", "migrate", "--no-input"], env=env(smtp_port), log=log, cwd=PROJECT
    )


def reset() -> None:
    """Empty the peer's tables (emails, logs, templates)."""
    database.truncate_all(
        DATABASE_URL, keep=("django_migrations", "django_content_type", "auth_permission")
    )


def enqueue(*, mode: str, count: int, per_call: int, smtp_port: int, log: Path) -> float:
    """Queue count emails (send_many per_call at a time, or one mail.send each); seconds."""
    out = procs.run(
        [
            PYTHON,
            "manage.py",
            "bench_enqueue",
            "--mode",
            mode,
            "--count",
            str(count),
            "--per-call",
            str(per_call),
        ],
        env=env(smtp_port),
        log=log,
        cwd=PROJECT,
    )
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def deliver(*, processes: int, expected: int, smtp_port: int, log: Path) -> dict:
    """Run send_queued_mail with this many processes: seconds until every email is final."""
    # post_office's FileLock leaves a symlink and a pid file: keep them out of the way.
    lockfile = log.parent / "locks" / "send_queued_mail"
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        cpu, db_cpu = procs.children_cpu_seconds(), procs.database_cpu_seconds()
        started = time.monotonic()
        process = procs.start(
            [
                PYTHON,
                "manage.py",
                "send_queued_mail",
                "--processes",
                str(processes),
                "--lockfile",
                lockfile,
            ],
            env=env(smtp_port),
            log=log,
            cwd=PROJECT,
        )
        try:
            done = procs.wait_until(
                lambda: database.scalar(conn, FINAL_COUNT) >= expected,
                timeout=max(120.0, expected / 10),
                interval=0.02,
                processes=[process],
                what=f"{expected} post_office emails final",
            )
            db_cpu = procs.database_cpu_seconds() - db_cpu
        finally:
            procs.stop(process)
        rows = conn.execute("SELECT status, count(*) FROM post_office_email GROUP BY 1").fetchall()
    names = {0: "sent", 1: "failed", 2: "queued", 3: "requeued"}
    return {
        "seconds": done - started,
        "cpu_seconds": procs.children_cpu_seconds() - cpu,
        "database_cpu_seconds": db_cpu,
        "statuses": {names[s]: n for s, n in rows},
    }
