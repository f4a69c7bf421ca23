"""Errors of one-time codes; MailqueueError subclasses, so the API answers them as 4xx."""

from mailqueue.errors import MailqueueError


class OtpRateLimited(MailqueueError):
    """Too soon after the last code, or too many codes for this address this hour (HTTP 429)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        # Whole seconds until a new code would be accepted (the Retry-After header).
        self.retry_after = retry_after
