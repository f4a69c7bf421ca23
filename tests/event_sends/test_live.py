"""The real `manage.py consume_events` process: stream and pub/sub events become emails, its
health check follows it, SIGTERM stops it cleanly."""

import json
import signal
import subprocess
import sys

import pytest

from event_sends.services import event_rule_create
from mailqueue.liveness import live_consumer_count
from mailqueue.models import Client, EmailJob
from mailqueue.scheduling import connection as redis_connection
from templates_app.services import template_create
from tests.event_sends.conftest import booking_event, publish
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
