"""Helpers for tests that drive the real queue."""

import django_rq

from mailqueue.models import Client, DeliveryAttempt, EmailJob, EmailStatus, Priority
from mailqueue.services.sender_domains import sender_domain_register_verified
from mailqueue.worker import MailqueueWorker

# RQ_QUEUES for a Redis that is down: every queue points at a port nothing listens on.
DOWN_REDIS = {
    name: {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 600} for name in Priority.values
}


def run_worker(*queues: str) -> MailqueueWorker:
    """Run a real worker in burst mode until the queues are empty (in this process)."""
    worker = django_rq.get_worker(*(queues or Priority.values))
    worker.work(burst=True, logging_level="WARNING")
    return worker


def queue_lengths() -> dict[str, int]:
    """Jobs waiting per priority queue."""
    return {name: len(django_rq.get_queue(name)) for name in Priority.values}


def assert_deferred(email: EmailJob) -> None:
    """The email's one attempt failed transiently and it waits for its next attempt."""
    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.next_attempt_at is not None
    assert email.delivery_attempts.get().outcome == DeliveryAttempt.Outcome.TRANSIENT


def sender_domains_verify(client: Client, *domains: str) -> None:
    """Let a client send from these domains (verified by an operator), as a real install does
    before it sends from its own domains."""
    for domain in domains:
        sender_domain_register_verified(client=client, domain=domain)
