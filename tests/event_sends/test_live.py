"""The real `manage.py consume_events` process: stream and pub/sub events become emails, its
health check follows it, SIGTERM stops it cleanly, and the entry of one killed mid-entry is
taken over and sent once."""

import json
import signal
import subprocess
import sys

import pytest
from django.db import connection, transaction

from event_sends.models import HandledEvent
from event_sends.services import event_rule_create
from mailqueue.liveness import live_consumer_count
from mailqueue.models import Client, EmailJob
from mailqueue.scheduling import connection as redis_connection
from templates_app.services import template_create
from tests.event_sends.conftest import STREAM, booking_event, pending_count, publish
from tests.live import PROJECT_DIR, live_env, process_logs, processes, wait_until


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "mailqueue_healthcheck", "consumer"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_consume_events_process_stream_and_pubsub(tmp_path):
    """A stream event and a pub/sub message each become their email; the consumer passes its
    health check while running, exits 0 on SIGTERM, and fails the check afterwards."""
    acme = Client.objects.create(name="acme")
    template_create(
        slug="booking-confirmation",
        name="Booking",
        subject="{{ name }}, your {{ service }} is booked",
        text="See you",
        variables=["name", "service"],
    )
    event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="booking-confirmation",
        recipient_path="user.email",
        context_path="booking",
    )
    redis = redis_connection()
    env = live_env(MAILQUEUE_EVENTS_BLOCK_SECONDS="0.2", LOG_LEVEL="INFO")
    command = ["consume_events", "--pubsub", "app-events"]

    with processes([command], env, tmp_path) as (consumer,):
        wait_until(
            lambda: (
                live_consumer_count(redis) == 1 and redis.pubsub_numsub("app-events")[0][1] == 1
            ),
            timeout=30,
            what="the consumer to register and subscribe",
            logs=tmp_path,
        )
        publish(redis, booking_event("from-stream"))
        redis.publish("app-events", json.dumps(booking_event("from-pubsub")))
        wait_until(
            lambda: EmailJob.objects.count() == 2, timeout=30, what="two emails", logs=tmp_path
        )
        healthy = _healthcheck(env)
        assert healthy.returncode == 0, healthy.stderr
        assert "1 live consumer" in healthy.stdout

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=15) == 0, process_logs(tmp_path)

    assert sorted(EmailJob.objects.values_list("metadata__event_id", flat=True)) == [
        "from-pubsub",
        "from-stream",
    ]
    assert redis.xpending("mailqueue:events", "mailqueue")["pending"] == 0
    unhealthy = _healthcheck(env)
    assert unhealthy.returncode == 1
    assert "no live consumer" in unhealthy.stderr


def _waiting_for_event_handled() -> int:
    """Sessions waiting for a lock on the handled-events table (an INSERT blocked there)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'event_handled'::regclass "
            "AND NOT granted"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_consumer_killed_mid_entry_is_taken_over_and_sends_once(tmp_path, booking_rule):
    """A real consumer reads an entry and is SIGKILLed while its INSERT into `event_handled`
    waits for a lock this test holds (so it dies between the read and the XACK, nothing
    committed); a second consumer takes the entry over after the idle time, creates the email
    exactly once and acknowledges it."""
    redis = redis_connection()
    env = live_env(MAILQUEUE_EVENTS_BLOCK_SECONDS="0.2", MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS="1")
    first_logs, second_logs = tmp_path / "first", tmp_path / "second"
    first_logs.mkdir()
    second_logs.mkdir()
    entry_id = publish(redis, booking_event("evt-killed"))

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE event_handled IN ACCESS EXCLUSIVE MODE")
        with processes([["consume_events"]], env, first_logs) as (first,):
            wait_until(
                lambda: _waiting_for_event_handled() == 1,
                timeout=10,
                what="the consumer to block on its INSERT into event_handled",
                logs=first_logs,
            )
            (pending,) = redis.xpending_range(STREAM, "mailqueue", min="-", max="+", count=10)
            assert pending["message_id"].decode() == entry_id
            assert pending["consumer"].decode().endswith(f"-{first.pid}")
            first.kill()
            assert first.wait(timeout=5) == -signal.SIGKILL
    # The lock is released: the killed consumer's session, if it gets that far, cannot commit.

    with processes([["consume_events"]], env, second_logs):
        wait_until(
            lambda: pending_count(redis) == 0,
            timeout=10,
            what="the second consumer to take over and acknowledge the entry",
            logs=second_logs,
        )
        assert "took over entry" in process_logs(second_logs)

    assert list(EmailJob.objects.values_list("metadata__event_id", "to")) == [
        ("evt-killed", ["ada@example.com"])
    ]
    assert list(HandledEvent.objects.values_list("event_id", flat=True)) == ["evt-killed"]
    assert not redis.xrange(f"{STREAM}:dead")
