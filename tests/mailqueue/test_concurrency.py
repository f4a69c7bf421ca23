"""Two workers given the same emails deliver each of them exactly once."""

import threading

import django_rq
import pytest
from django.db import connection

from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue
from mailqueue.services import BatchRecipient, batch_create
from mailqueue.services.delivery import emails_claim
from tests.helpers import queue_lengths
from tests.live import live_env, process_logs, processes


def _accept_batch(client, count: int) -> list[str]:
    """Accept a batch of `count` emails (committed, chunk jobs enqueued); return their ids."""
    batch = batch_create(
        client=client,
        template="welcome",
        recipients=[
            BatchRecipient(to=[f"user{n}@example.com"], context={"name": f"U{n}"}, metadata={})
            for n in range(count)
        ],
    )
    return [
        str(pk) for pk in batch.emails.order_by("created_at", "id").values_list("pk", flat=True)
    ]


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_with_every_email_enqueued_twice_send_each_once(
    issued_key, welcome_template, smtp_sink, tmp_path
):
    """200 emails, each in two jobs, drained by two `rqworker --burst` processes at once."""
    ids = _accept_batch(issued_key.api_key.client, 200)
    # Replace the batch's own jobs with two jobs per chunk of 25, side by side on the queue
    # (the second in the opposite order), so both workers tend to take the same emails at
    # the same moment, as after a sweeper re-enqueue racing a slow original job.
    django_rq.get_queue("default").empty()
    deliveries_enqueue(
        DeliveryJob(job_id=f"{name}-{start}", email_ids=tuple(chunk), priority="default")
        for start in range(0, 200, 25)
        for name, chunk in (
            ("first", ids[start : start + 25]),
            ("again", ids[start : start + 25][::-1]),
        )
    )
    assert queue_lengths()["default"] == 16

    env = live_env(EMAIL_PROVIDERS="smtp", EMAIL_URL=f"smtp://{smtp_sink.host}:{smtp_sink.port}")
    command = ["rqworker", "--burst", "high", "default", "low"]
    with processes([command, command], env, tmp_path) as workers:
        for worker in workers:
            assert worker.wait(timeout=60) == 0, process_logs(tmp_path)

    message_ids = [m.message["Message-ID"] for m in smtp_sink.messages]
    assert len(message_ids) == 200, process_logs(tmp_path)
    assert len(set(message_ids)) == 200
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
        f"user{n}@example.com" for n in range(200)
    )
    assert EmailJob.objects.filter(status=EmailStatus.SENT).count() == 200
    assert DeliveryAttempt.objects.count() == 200
    stored = set(EmailJob.objects.values_list("message_id", flat=True))
    assert stored == {message_id.strip("<>") for message_id in message_ids}


@pytest.mark.django_db
def test_claiming_the_same_emails_twice_hands_each_out_once(issued_key, welcome_template):
    """The second claim of already-claimed emails gets none of them."""
    ids = _accept_batch(issued_key.api_key.client, 10)

    first = emails_claim(email_ids=ids)
    second = emails_claim(email_ids=ids + ids[:3])

    assert sorted(str(e.pk) for e in first) == sorted(ids)
    assert second == []
    assert set(EmailJob.objects.values_list("status", flat=True)) == {EmailStatus.SENDING}


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_split_the_emails_without_overlap(issued_key, welcome_template):
    """Eight threads claiming the same 100 emails at the same moment share them out exactly."""
    ids = _accept_batch(issued_key.api_key.client, 100)
    start = threading.Barrier(8)
    claimed: list[list[str]] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            start.wait()
            claimed.append([str(e.pk) for e in emails_claim(email_ids=ids)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    every_claim = [email_id for batch in claimed for email_id in batch]
    assert sorted(every_claim) == sorted(ids)
