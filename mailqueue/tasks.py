"""RQ tasks: take ids, call a service. No message content travels through Redis."""

from rq import get_current_job

from mailqueue.services import emails_deliver, queue_drain


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else ""


def deliver_emails(email_ids: list[str]) -> dict:
    """Deliver the emails named by one job (a scheduled send, a retry, a swept email)."""
    return emails_deliver(email_ids=email_ids, job_id=_job_id()).as_dict()


def drain_queue(priority: str) -> dict:
    """Deliver the queued emails of one priority, a chunk at a time (see queue_drain)."""
    return queue_drain(priority=priority, job_id=_job_id()).as_dict()
