"""Helpers for tests that drive the real queue."""

import django_rq

from mailqueue.worker import MailqueueWorker


def run_worker(*queues: str) -> MailqueueWorker:
    """Run a real worker in burst mode until the queues are empty (in this process)."""
    worker = django_rq.get_worker(*(queues or ("high", "default", "low")))
    worker.work(burst=True, logging_level="WARNING")
    return worker


def queue_lengths() -> dict[str, int]:
    """Jobs waiting per priority queue."""
    return {name: len(django_rq.get_queue(name)) for name in ("high", "default", "low")}
