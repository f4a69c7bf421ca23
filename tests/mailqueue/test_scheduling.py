"""Scheduled sends leave at send_at, never before; cancelled ones never leave.

The last test runs the real `rqscheduler` and `rqworker` commands as separate processes; its
helpers (`live_env`, `processes`, `wait_until`) are shared with the sweeper and concurrency
tests.
"""

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from mailqueue.models import CapturedMessage, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from mailqueue.services import email_cancel, email_create
from mailqueue.tasks import deliver_emails
from tests.helpers import queue_lengths, run_worker

PROJECT_DIR = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def schedule(issued_key, django_capture_on_commit_callbacks):
    """Accept one email due at `send_at`; its job reaches Redis as on a real commit."""

    def make(send_at, to: str = "ada@example.com") -> EmailJob:
        with django_capture_on_commit_callbacks(execute=True):
            return email_create(
                client=issued_key.api_key.client,
                to=[to],
                subject="Reminder",
                text="Your appointment",
                send_at=send_at,
            )

    return make


@pytest.mark.django_db
def test_scheduled_email_waits_for_send_at_and_then_goes_out(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """Before send_at neither the scheduler nor a worker sends it; after, they do."""
    send_at = timezone.now() + timedelta(seconds=1.5)
    email = schedule(send_at)

    assert email.status == EmailStatus.SCHEDULED
    assert scheduled_entries() == {f"email-{email.pk.hex}": math.ceil(send_at.timestamp())}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}

    get_scheduler().enqueue_jobs()
    run_worker()
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED

    # A job that runs early (a retried or duplicated job) puts the email back, unsent.
    with django_capture_on_commit_callbacks(execute=True):
        report = deliver_emails([str(email.pk)])
    assert report["claimed"] == 0
    assert report["rescheduled"] == 1
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
    assert scheduled_entries() == {f"email-{email.pk.hex}": math.ceil(send_at.timestamp())}

    sleep_until(math.ceil(send_at.timestamp()))
    get_scheduler().enqueue_jobs()
    run_worker()

    assert len(smtp_sink.messages) == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.sent_at >= send_at


@pytest.mark.django_db
def test_job_released_early_to_a_worker_is_put_back_and_sent_on_time(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """A worker that gets a scheduled email's job too soon (clock skew) re-schedules it."""
    send_at = timezone.now() + timedelta(seconds=1.5)
    email = schedule(send_at)
    job_id = f"email-{email.pk.hex}"
    # Release the scheduled job now, as a scheduler with a fast clock would.
    redis_connection().zadd(get_scheduler().scheduled_jobs_key, {job_id: time.time() - 1})
    get_scheduler().enqueue_jobs()
    assert queue_lengths()["default"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
    assert scheduled_entries() == {job_id: math.ceil(send_at.timestamp())}

    sleep_until(math.ceil(send_at.timestamp()))
    get_scheduler().enqueue_jobs()
    run_worker()

    assert len(smtp_sink.messages) == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.sent_at >= send_at


@pytest.mark.django_db
def test_send_at_in_the_past_is_sent_right_away(smtp_sink, schedule):
    """A send_at that has already passed is an ordinary queued email."""
    email = schedule(timezone.now() - timedelta(minutes=5))

    assert email.status == EmailStatus.QUEUED
    assert scheduled_entries() == {}
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_cancelled_scheduled_email_is_never_sent(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """Cancelling before send_at removes it from the scheduler; even a stray job will not send."""
    send_at = timezone.now() + timedelta(seconds=0.5)
    email = schedule(send_at)

    with django_capture_on_commit_callbacks(execute=True):
        email_cancel(email=email)

    assert email.status == EmailStatus.CANCELLED
    assert scheduled_entries() == {}

    sleep_until(math.ceil(send_at.timestamp()))
    get_scheduler().enqueue_jobs()
    run_worker()
    # Even if a job for it survived somewhere, running it now does nothing.
    report = deliver_emails([str(email.pk)])

    assert report["claimed"] == 0
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.CANCELLED
    assert email.sent_at is None


@pytest.mark.django_db
def test_cancel_through_the_api_stops_a_scheduled_email(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """POST .../cancel/ before send_at: the email ends cancelled and never reaches the server."""
    send_at = timezone.now() + timedelta(seconds=0.5)
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(
            "/api/v1/emails/",
            {"to": ["ada@example.com"], "subject": "Later", "text": "x", "send_at": send_at},
            format="json",
        )
    assert created.json()["status"] == "scheduled"
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = api.post(f"/api/v1/emails/{created.json()['id']}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    sleep_until(math.ceil(send_at.timestamp()))
    get_scheduler().enqueue_jobs()
    run_worker()

    assert smtp_sink.messages == []
    assert api.get(f"/api/v1/emails/{created.json()['id']}/").json()["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_scheduler_and_worker_processes_send_within_seconds_of_send_at(issued_key, tmp_path):
    """End to end with the real commands: sent no earlier than send_at and at most ~2 s late."""
    with processes([["rqscheduler"], ["rqworker", "high", "default", "low"]], live_env(), tmp_path):
        wait_until(
            scheduler_and_worker_are_up, timeout=20, what="scheduler and worker", logs=tmp_path
        )
        send_at = timezone.now() + timedelta(seconds=3)
        email = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            subject="On time",
            text="x",
            send_at=send_at,
        )
        assert email.status == EmailStatus.SCHEDULED

        def sent() -> bool:
            return EmailJob.objects.filter(pk=email.pk, status=EmailStatus.SENT).exists()

        wait_until(sent, timeout=15, what="the scheduled email to be sent", logs=tmp_path)

    email.refresh_from_db()
    lateness = (email.sent_at - email.send_at).total_seconds()
    assert 0 <= lateness <= 2.5, f"sent {lateness:.2f}s after send_at"
    assert CapturedMessage.objects.filter(email=email).count() == 1
