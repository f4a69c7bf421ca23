"""Running the real `manage.py` commands (scheduler, workers) as subprocesses in tests."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Variables of the developer's shell that would change what the subprocesses do.
_FOREIGN_PREFIXES = ("ANYMAIL_", "MAILQUEUE_", "EMAIL_", "DATABASE_", "REDIS_", "DJANGO_")


def live_env(**extra: str) -> dict[str, str]:
    """Environment for a `manage.py` subprocess using this test's database and Redis DB."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "postgres")
    if db["PASSWORD"]:
        credentials += f":{quote(db['PASSWORD'])}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(
        DATABASE_URL=(
            f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{db['NAME']}"
        ),
        REDIS_URL=settings.REDIS_URL,
        DEBUG="1",
        SECRET_KEY="x",
        EMAIL_PROVIDERS="capture",
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str], log_dir: Path
) -> Iterator[list[subprocess.Popen]]:
    """Start `manage.py` commands; always stop them (terminate, then kill) on the way out."""
    started: list[subprocess.Popen] = []
    try:
        for index, command in enumerate(commands):
            log = open(log_dir / f"process-{index}-{command[0]}.log", "wb")  # noqa: SIM115
            started.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", *command],
                    cwd=PROJECT_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def process_logs(log_dir: Path) -> str:
    """Everything the subprocesses printed, for assertion messages."""
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(log_dir.glob("process-*.log"))
    )


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, logs: Path) -> None:
    """Poll a condition every 50 ms until it holds, or fail with the subprocess logs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{process_logs(logs)}")
        time.sleep(0.05)


def scheduler_and_worker_are_up() -> bool:
    """Both subprocesses have registered themselves in Redis."""
    redis = redis_connection()
    return bool(redis.keys("rq:scheduler_instance:*")) and bool(redis.smembers("rq:workers"))


def scheduled_entries() -> dict[str, float]:
    """Job id -> release time (unix seconds) of every job waiting in rq-scheduler."""
    key = get_scheduler().scheduled_jobs_key
    return {
        job_id.decode(): score
        for job_id, score in redis_connection().zrange(key, 0, -1, withscores=True)
    }


def sleep_until(moment) -> None:
    """Sleep until a datetime or unix time has passed."""
    target = moment if isinstance(moment, (int, float)) else moment.timestamp()
    remaining = target - time.time()
    if remaining > 0:
        time.sleep(remaining + 0.01)
