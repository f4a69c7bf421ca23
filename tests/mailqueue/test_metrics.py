"""`GET /metrics`: counters written by real worker processes, gauges, the token, Redis down."""

import logging
import time
from datetime import timedelta

import django_rq
import pytest
from django.test import Client as HttpClient
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from event_sends import conf as events_conf
from mailqueue.metrics.counters import PROCESSED, Increments, increments_write
from mailqueue.models import EmailJob, EmailStatus, SuppressionReason
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import email_create, email_retry
from mailqueue.services.suppressions import NewSuppression, suppressions_add
from tests.helpers import DOWN_REDIS
from tests.live import live_env, process_logs, processes
from tests.tracking.esp_payloads import post_json, sent_email
from tests.tracking.test_esp_webhooks import MAILGUN, MAILGUN_KEY, mailgun_body


def scrape(**headers: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a real `GET /metrics`: (sample name, sorted labels) -> value."""
    response = HttpClient().get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 if absent, as Prometheus would read a series not yet created)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_count_every_outcome_once(issued_key, smtp_sink, tmp_path):
    """30 sent, one failed, one retrying and one suppressed, delivered by two `rqworker`
    processes: every counter equals what happened, summed over both processes."""
    client = issued_key.api_key.client
    suppressions_add(
        entries=[NewSuppression(address="gone@example.com", reason=SuppressionReason.MANUAL)]
    )
    smtp_sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    smtp_sink.rcpt_replies["busy@example.com"] = "451 4.3.0 Mailbox busy, try later"
    addresses = [f"user{n}@example.com" for n in range(30)]
    addresses += ["nobody@example.com", "busy@example.com", "gone@example.com"]
    emails = [
        email_create(client=client, to=[address], subject="Hi", text="Hello")
        for address in addresses
    ]
    # Many small jobs instead of one drain, so both workers take a share of the emails.
    django_rq.get_queue("default").empty()
    deliveries_enqueue(
        DeliveryJob(
            f"metrics-{start}", tuple(str(e.pk) for e in emails[start : start + 3]), "default"
        )
        for start in range(0, len(emails), 3)
    )

    env = live_env(EMAIL_PROVIDERS="smtp", EMAIL_URL=f"smtp://{smtp_sink.host}:{smtp_sink.port}")
    command = ["rqworker", "--burst", "high", "default", "low"]
    with processes([command, command], env, tmp_path) as workers:
        for worker in workers:
            assert worker.wait(timeout=60) == 0, process_logs(tmp_path)

    assert EmailJob.objects.filter(status=EmailStatus.SENT).count() == 30, process_logs(tmp_path)
    samples = scrape()
    processed = PROCESSED.name
    assert value(samples, processed, status="sent", provider="smtp") == 30
    assert value(samples, processed, status="failed", provider="smtp") == 1
    assert value(samples, processed, status="retrying", provider="smtp") == 1
    assert value(samples, processed, status="suppressed", provider="none") == 1
    assert sum(v for (name, _), v in samples.items() if name == processed) == 33
    # The suppressed email never reached a provider.
    assert value(samples, "email_provider_requests_total", provider="smtp") == 32
    errors = "email_provider_errors_total"
    assert value(samples, errors, provider="smtp", kind="permanent") == 1
    assert value(samples, errors, provider="smtp", kind="transient") == 1
    histogram = "email_job_processing_duration_seconds"
    assert value(samples, f"{histogram}_count", provider="smtp") == 32
    assert value(samples, f"{histogram}_bucket", provider="smtp", le="+Inf") == 32
    assert value(samples, f"{histogram}_count", provider="none") == 1
    assert 0 < value(samples, f"{histogram}_sum", provider="smtp") < 32 * 60
    assert value(samples, "email_jobs_queued_total", priority="default") == 33
    assert value(samples, "email_jobs_tracked_total") == 33
    # Gauges: the retrying email waits; the burst workers have exited.
    assert value(samples, "queue_size", queue="retrying") == 1
    assert value(samples, "queue_size", queue="default") == 0
    assert value(samples, "workers") == 0
    # The answering process's own metrics.
    assert value(samples, "process_resident_memory_bytes") > 0
    assert any(name == "python_gc_objects_collected_total" for name, _ in samples)


@pytest.mark.django_db
def test_gauges_show_waiting_emails_their_age_and_live_workers(issued_key, smtp_sink, work, send):
    """Queued per priority, scheduled and retrying counts, the oldest queued email's age, and a
    registered worker."""
    smtp_sink.rcpt_replies["busy@example.com"] = "451 4.3.0 Mailbox busy, try later"
    send("busy@example.com")
    work()
    send(priority="high")
    send(priority="high")
    send(priority="low")
    send(send_at=timezone.now() + timedelta(hours=1))
    EmailJob.objects.filter(priority="high").update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    worker = django_rq.get_worker("high", "default", "low")
    worker.register_birth()
    try:
        samples = scrape()
    finally:
        worker.register_death()

    assert value(samples, "queue_size", queue="high") == 2
    assert value(samples, "queue_size", queue="default") == 0
    assert value(samples, "queue_size", queue="low") == 1
    assert value(samples, "queue_size", queue="scheduled") == 1
    assert value(samples, "queue_size", queue="retrying") == 1
    assert 299 < value(samples, "oldest_queued_email_age_seconds", priority="high") < 400
    assert value(samples, "oldest_queued_email_age_seconds", priority="default") == 0
    assert value(samples, "workers") == 1
    assert value(samples, "email_jobs_queued_total", priority="high") == 2
    assert value(samples, "email_jobs_tracked_total") == 5


@pytest.mark.django_db
def test_the_token_guards_the_endpoint_when_set(settings):
    """Open without a token; with one, 401 (no details) unless the bearer token matches."""
    http = HttpClient()
    assert http.get("/metrics").status_code == 200
    assert http.head("/metrics").status_code == 200
    assert http.post("/metrics").status_code == 405

    settings.MAILQUEUE_METRICS_TOKEN = "scrape-s3cret"
    refused = http.get("/metrics")
    assert refused.status_code == 401
    assert refused.content == b""
    assert http.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert http.get("/metrics", HTTP_AUTHORIZATION="scrape-s3cret").status_code == 401
    allowed = http.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-s3cret")
    assert allowed.status_code == 200
    assert b"# TYPE email_jobs_processed_total counter" in allowed.content


@pytest.mark.django_db
def test_redis_down_drops_increments_with_one_warning_and_the_scrape_still_answers(
    settings, caplog
):
    """Recording never raises nor waits; the scrape leaves out what Redis holds."""
    settings.RQ_QUEUES = DOWN_REDIS
    increments = Increments()
    increments.add(PROCESSED, "sent", "smtp")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mailqueue.metrics.counters"):
        for _ in range(5):
            increments_write(increments)
    assert time.monotonic() - started < 2
    warnings = [r for r in caplog.records if r.name == "mailqueue.metrics.counters"]
    assert len(warnings) == 1

    samples = scrape()
    assert ("queue_size", (("queue", "high"),)) in samples
    assert not any(name.startswith("email_jobs_processed") for name, _ in samples)


@pytest.mark.django_db
def test_a_signed_esp_webhook_counts_its_stored_events_once(issued_key, settings):
    """A Mailgun-signed delivery event counts once, and its replay is not counted again."""
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    email = sent_email(issued_key.api_key.client, message_id="<m1@mg.acme.test>")
    body = mailgun_body("mailgun_delivered.json", email)

    assert post_json(MAILGUN, body).status_code == 200
    assert post_json(MAILGUN, body).status_code == 200

    samples = scrape()
    assert value(samples, "email_webhook_events_total", esp="mailgun", type="delivered") == 1


@pytest.mark.django_db
def test_a_retried_email_is_queued_again_but_stored_once(
    smtp_sink, send, work, django_capture_on_commit_callbacks
):
    """An operator's retry of a failed email counts as accepted again, not as a new email."""
    smtp_sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    email = send("nobody@example.com")
    work()
    with django_capture_on_commit_callbacks(execute=True):
        email_retry(email=email)

    samples = scrape()
    assert value(samples, "email_jobs_queued_total", priority="default") == 2
    assert value(samples, "email_jobs_tracked_total") == 1
    assert value(samples, "email_jobs_processed_total", status="failed", provider="smtp") == 1


@pytest.mark.django_db
def test_event_stream_gauges_show_lag_and_dead_letters():
    """Events published before any consumer read them are lag; dead letters are counted."""
    redis = redis_connection()
    for number in range(3):
        redis.xadd(events_conf.events_stream(), {"event": f'{{"id": "{number}"}}'})
    redis.xadd(events_conf.events_dead_stream(), {"reason": "bad JSON", "event": "{"})

    samples = scrape()

    assert value(samples, "email_events_lag") == 3
    assert value(samples, "email_events_pending") == 0
    assert value(samples, "email_events_dead_letters") == 1
    assert value(samples, "email_events_consumers") == 0
