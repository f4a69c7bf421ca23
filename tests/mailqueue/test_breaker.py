"""The providers' circuit breakers against the real Redis: the sliding window, one circuit for
every process, one half-open probe, re-opening, and the per-process fallback when Redis is down.

Each `ProviderBreakers` instance stands for one worker process: instances share nothing but
Redis, so what one opens, another sees only through Redis.
"""

import logging
import re
import socket
import threading
import time

import pytest
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import CapturedMessage, EmailJob, EmailStatus
from mailqueue.providers import CircuitState, get_provider, providers_in_service
from mailqueue.providers.breaker import (
    CALL,
    CLOSED,
    HALF_OPEN,
    OPEN,
    REFRESH_SECONDS,
    ProviderBreakers,
    breakers,
)
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import AttachmentInput, emails_deliver
from tests.helpers import DOWN_REDIS

NAME = "postmark"


@pytest.fixture
def breaker_settings(settings):
    """Three failures in a second open a circuit for 0.3 s."""
    settings.MAILQUEUE_BREAKER_FAILURES = 3
    settings.MAILQUEUE_BREAKER_WINDOW_SECONDS = 1
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 0.3
    return settings


def fail(process: ProviderBreakers, times: int = 1) -> None:
    """`times` transient failures of plain calls, as a worker reports them."""
    for _ in range(times):
        process.record_failure(NAME, CALL)


def test_failures_open_the_circuit_only_when_enough_fall_in_the_window(breaker_settings):
    """Two failures, then two more once the first have left the window: still closed; a third
    within the window opens it."""
    breaker_settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30
    worker = ProviderBreakers()
    fail(worker, 2)
    time.sleep(1.1)
    fail(worker, 2)
    assert worker.states([NAME])[NAME].state == CLOSED
    assert worker.states([NAME])[NAME].recent_failures == 2
    assert worker.permit(NAME) is CALL

    fail(worker)

    state = worker.states([NAME])[NAME]
    assert state.state == OPEN
    assert 25 < state.seconds_left <= 30
    assert worker.permit(NAME) is None
    assert worker.in_service([NAME]) == []


def test_a_circuit_opened_by_one_process_stops_calls_in_every_other(breaker_settings):
    """Another process, which saw none of the failures, stops calling within a refresh."""
    breaker_settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30
    one, other = ProviderBreakers(), ProviderBreakers()
    assert other.in_service([NAME]) == [NAME]  # its first read: closed

    fail(one, 3)

    time.sleep(REFRESH_SECONDS + 0.05)
    assert other.in_service([NAME]) == []
    assert other.permit(NAME) is None
    assert 25 < other.wait_seconds([NAME]) <= 30


def test_exactly_one_half_open_probe_across_concurrent_processes(breaker_settings):
    """After the open time, 8 processes with 4 threads each ask at once: one gets the probe."""
    fail(ProviderBreakers(), 3)
    processes = [ProviderBreakers() for _ in range(8)]
    for process in processes:
        assert process.in_service([NAME]) == []  # each has read the open circuit
    time.sleep(0.35)
    start = threading.Barrier(32)
    permits = []

    def ask(process: ProviderBreakers) -> None:
        start.wait()
        permits.append(process.permit(NAME))

    threads = [threading.Thread(target=ask, args=(p,)) for p in processes for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    granted = [permit for permit in permits if permit is not None]
    assert len(granted) == 1
    assert granted[0].probe
    assert ProviderBreakers().states([NAME])[NAME].state == HALF_OPEN
    assert ProviderBreakers().states([NAME])[NAME].probing


def test_a_successful_probe_closes_the_circuit_for_everyone(breaker_settings):
    worker, other = ProviderBreakers(), ProviderBreakers()
    fail(worker, 3)
    assert other.in_service([NAME]) == []
    time.sleep(0.35)
    probe = worker.permit(NAME)
    assert probe is not None and probe.probe

    worker.record_success(NAME, probe)

    assert worker.permit(NAME) is CALL
    assert worker.states([NAME])[NAME].state == CLOSED
    assert worker.states([NAME])[NAME].recent_failures == 0  # a fresh window
    time.sleep(REFRESH_SECONDS + 0.05)
    assert other.in_service([NAME]) == [NAME]
    assert other.permit(NAME) is CALL


def test_a_failed_probe_opens_the_circuit_again(breaker_settings):
    worker = ProviderBreakers()
    fail(worker, 3)
    time.sleep(0.35)
    probe = worker.permit(NAME)
    assert probe is not None and probe.probe
    breaker_settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 1  # the next open period

    worker.record_failure(NAME, probe)

    state = ProviderBreakers().states([NAME])[NAME]
    assert state.state == OPEN
    assert 0.5 < state.seconds_left <= 1
    assert not state.probing
    assert worker.permit(NAME) is None
    time.sleep(1.05)
    assert ProviderBreakers().permit(NAME).probe  # the next cool-off ends with a new probe


def test_a_probe_whose_worker_died_is_retried_after_its_lease(breaker_settings):
    """A worker that took the probe and never reported (killed) holds it only for its lease."""
    dead = ProviderBreakers(lease_seconds=lambda: 1.0)
    fail(dead, 3)
    time.sleep(0.35)
    assert dead.permit(NAME).probe  # ... and the worker dies here
    survivor = ProviderBreakers()
    assert survivor.permit(NAME) is None  # the probe is under way

    time.sleep(1.05)

    probe = survivor.permit(NAME)
    assert probe is not None and probe.probe
    survivor.record_success(NAME, probe)
    assert survivor.states([NAME])[NAME].state == CLOSED


def test_a_probe_answered_with_a_refusal_of_its_message_lets_the_next_email_probe(
    breaker_settings,
):
    """A refusal is about the message: the circuit stays half-open and another call decides."""
    worker = ProviderBreakers()
    fail(worker, 3)
    time.sleep(0.35)
    probe = worker.permit(NAME)

    worker.record_refusal(NAME, probe)

    assert worker.states([NAME])[NAME].state == HALF_OPEN
    assert ProviderBreakers().permit(NAME).probe


def test_failures_of_calls_made_while_open_do_not_extend_it(breaker_settings):
    """Calls that started before the circuit opened and fail after do not keep it open."""
    worker = ProviderBreakers()
    fail(worker, 3)
    fail(worker, 5)  # late failures of calls under way when it opened
    time.sleep(0.35)
    assert ProviderBreakers().permit(NAME).probe


def test_successes_while_closed_cost_no_redis_call(breaker_settings):
    """The per-email path of a working provider: after the first read, one refresh a second."""
    calls = []

    def counted():
        calls.append(1)
        return redis_connection()

    worker = ProviderBreakers(redis=counted)
    started = time.monotonic()
    for _ in range(2000):
        assert worker.in_service([NAME]) == [NAME]
        permit = worker.permit(NAME)
        worker.record_success(NAME, permit)
    elapsed = time.monotonic() - started

    assert len(calls) <= 1 + elapsed / REFRESH_SECONDS


def test_redis_down_falls_back_to_a_breaker_of_this_process(breaker_settings, caplog):
    """Without Redis a process still opens, probes and closes its own circuit, with a warning."""
    breaker_settings.RQ_QUEUES = DOWN_REDIS
    breaker_settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 1
    worker = ProviderBreakers()
    assert worker.in_service([NAME]) == [NAME]

    with caplog.at_level(logging.WARNING, logger="mailqueue.providers.breaker"):
        fail(worker, 3)

    assert "Redis unreachable" in caplog.text
    assert worker.in_service([NAME]) == []
    assert worker.permit(NAME) is None
    assert worker.local_states([NAME])[NAME].state == OPEN
    time.sleep(1.05)
    probe = worker.permit(NAME)
    assert probe is not None and probe.local
    assert worker.permit(NAME) is None  # one probe in this process too
    worker.record_success(NAME, probe)
    assert worker.permit(NAME) is CALL
    assert worker.in_service([NAME]) == [NAME]


def test_providers_in_service_uses_the_process_breakers(breaker_settings):
    """The registry's check reads the same circuits as the breakers (default instance)."""
    postmark = get_provider(NAME)
    fail(breakers, 3)
    assert providers_in_service([postmark]) == []


@pytest.mark.django_db
def test_metrics_show_each_circuit_and_count_its_openings(client, breaker_settings):
    """`email_provider_circuit_state` is 1 while open (0 closed) and every opening, including
    a failed probe's, adds to `email_provider_circuit_opened_total`."""
    breaker_settings.EMAIL_PROVIDERS = [NAME, "smtp"]
    breaker_settings.MAILQUEUE_METRICS_TOKEN = ""
    breaker_settings.MAILQUEUE_BREAKER_WINDOW_SECONDS = 30
    worker = ProviderBreakers()
    fail(worker, 3)
    time.sleep(0.35)
    breaker_settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30  # still open at the scrape
    worker.record_failure(NAME, worker.permit(NAME))  # the probe fails: open again

    scrape = client.get("/metrics").content.decode()

    assert f'email_provider_circuit_state{{provider="{NAME}"}} 1.0' in scrape
    assert 'email_provider_circuit_state{provider="smtp"} 0.0' in scrape
    assert f'email_provider_circuit_opened_total{{provider="{NAME}"}} 2.0' in scrape
    assert f'email_provider_circuit_recent_failures{{provider="{NAME}"}} 3.0' in scrape


@pytest.mark.django_db
def test_the_route_and_the_circuits_show_in_the_admin_and_the_api(
    admin_client, api, settings, send
):
    """After SMTP fails and its circuit opens, the email admin and the API show how each email
    got to `capture`, and the dashboard shows SMTP's open circuit."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": unused.getsockname()[1]}
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    failed_over, skipped = send("a@example.com"), send("b@example.com")

    emails_deliver(email_ids=[str(failed_over.pk), str(skipped.pk)])

    page = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[failed_over.pk]))
    text = page.content.decode()
    assert "attempt 1: smtp (transient) → capture (sent)" in text
    assert "failed over to capture: smtp failed" in text
    page = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[skipped.pk]))
    text = page.content.decode()
    assert "attempt 1: capture (sent)" in text
    assert "failed over to capture: smtp skipped (circuit open)" in text

    detail = api.get(f"/api/v1/emails/{skipped.pk}/").json()
    assert detail["provider"] == "capture"
    assert [(a["provider"], a["outcome"]) for a in detail["delivery_attempts"]] == [
        ("capture", "sent")
    ]
    sent = [event for event in detail["events"] if event["type"] == "sent"]
    assert sent[0]["description"] == "failed over to capture: smtp skipped (circuit open)"

    home = admin_client.get(reverse("admin:index")).content.decode()
    circuit = re.search(r'id="dashboard-circuit-smtp"[^>]*>([^<]*)<', home)
    assert circuit and "circuit open" in circuit[1] and "1 recent failure" in circuit[1]
    assert re.search(r'id="dashboard-circuit-capture"[^>]*>circuit closed<', home)


@pytest.mark.django_db
def test_refused_messages_never_open_the_circuit(smtp_sink, settings, send):
    """Ten emails to an address the server refuses (550) fail for good, and the next email
    still goes to SMTP: one bad message after another is not an outage."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    settings.MAILQUEUE_BREAKER_FAILURES = 3
    smtp_sink.rcpt_replies["bad@example.com"] = "550 5.1.1 No such user"
    bad = [send("bad@example.com") for _ in range(10)]

    emails_deliver(email_ids=[str(email.pk) for email in bad])
    good = send("good@example.com")
    emails_deliver(email_ids=[str(good.pk)])

    assert {email.status for email in EmailJob.objects.filter(pk__in=[e.pk for e in bad])} == {
        EmailStatus.FAILED
    }
    assert ProviderBreakers().states(["smtp"])["smtp"] == CircuitState(state=CLOSED)
    good.refresh_from_db()
    assert (good.status, good.provider) == (EmailStatus.SENT, "smtp")
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["good@example.com"]]


@pytest.mark.django_db
def test_a_message_that_cannot_be_built_fails_alone_and_counts_against_no_provider(
    smtp_sink, settings, send
):
    """A header Django refuses to write (a line break that bypassed validation) fails that
    email for good at once; the provider's circuit records nothing, and the next email goes."""
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    broken = send("ada@example.com", attachments=[AttachmentInput("a.txt", b"a", "text/plain")])
    EmailJob.objects.filter(pk=broken.pk).update(headers={"X-Note": "one\nBcc: x@example.com"})

    emails_deliver(email_ids=[str(broken.pk)])
    good = send("good@example.com")
    emails_deliver(email_ids=[str(good.pk)])

    broken.refresh_from_db()
    assert (broken.status, broken.error_class) == (EmailStatus.FAILED, "message")
    assert ProviderBreakers().states(["smtp"])["smtp"] == CircuitState(state=CLOSED)
    good.refresh_from_db()
    assert (good.status, good.provider) == (EmailStatus.SENT, "smtp")
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["good@example.com"]]


@pytest.mark.django_db
def test_deferred_recipients_never_open_the_circuit(smtp_sink, settings, send):
    """Ten emails to a greylisted address (451 on RCPT) are retried later, and the next email
    still goes to SMTP at once: a deferral of one recipient is not the provider failing."""
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_BREAKER_FAILURES = 3
    smtp_sink.rcpt_replies["greylisted@example.com"] = "451 4.7.1 Greylisted, try again later"
    deferred = [send("greylisted@example.com") for _ in range(10)]

    emails_deliver(email_ids=[str(email.pk) for email in deferred])
    good = send("good@example.com")
    emails_deliver(email_ids=[str(good.pk)])

    statuses = EmailJob.objects.filter(pk__in=[e.pk for e in deferred]).values_list(
        "status", flat=True
    )
    assert set(statuses) == {EmailStatus.RETRYING}
    assert ProviderBreakers().states(["smtp"])["smtp"] == CircuitState(state=CLOSED)
    good.refresh_from_db()
    assert (good.status, good.provider) == (EmailStatus.SENT, "smtp")


@pytest.mark.django_db
def test_an_email_meeting_another_workers_probe_waits_without_using_an_attempt(
    settings, send, django_capture_on_commit_callbacks
):
    """The only provider is half-open and another worker holds its probe: the email is not sent
    to it, uses no attempt and is tried again within a second or so."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 0.2
    other = ProviderBreakers()
    other.record_failure("capture", CALL)
    time.sleep(0.25)
    assert other.permit("capture").probe  # the other worker's probe is under way
    email = send()

    with django_capture_on_commit_callbacks(execute=True):
        emails_deliver(email_ids=[str(email.pk)])

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.attempts == 0
    assert not email.delivery_attempts.exists()
    assert email.error_class == "providers_circuit_open"
    assert 0 < (email.next_attempt_at - timezone.now()).total_seconds() <= 1.1
    assert not CapturedMessage.objects.exists()
