"""RQ tasks: take ids, call a service. No message content travels through Redis."""

from rq import get_current_job

from mailqueue.logs import job_id_reset, job_id_set
from mailqueue.services import emails_deliver, queue_drain


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else ""


def deliver_emails(email_ids: list[str]) -> dict:
    """Deliver the emails named by one job (a scheduled send, a retry, a swept email)."""
    job_id = _job_id()
    # Lines logged while the job runs (in this thread) carry its id.
    token = job_id_set(job_id)
    try:
        return emails_deliver(email_ids=email_ids, job_id=job_id).as_dict()
    finally:
        job_id_reset(token)


def drain_queue(priority: str) -> dict:
    """Deliver the queued emails of one priority, a chunk at a time (see queue_drain)."""
    job_id = _job_id()
    token = job_id_set(job_id)
    try:
        return queue_drain(priority=priority, job_id=job_id).as_dict()
    finally:
        job_id_reset(token)
