"""RQ tasks: take ids, call a service. No message content travels through Redis."""

from mailqueue.services import emails_deliver


def deliver_emails(email_ids: list[str]) -> dict:
    """Deliver the emails of one job (one email, or a chunk of a batch)."""
    return emails_deliver(email_ids=email_ids).as_dict()
