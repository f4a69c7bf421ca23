"""The `capture` provider: a built-in inbox that stores the exact MIME message in the database."""

from django.core.mail import EmailMessage

from mailqueue.providers.base import Provider, SendResult, message_id


class CaptureProvider(Provider):
    """Stores messages instead of sending them; browse them in the admin's capture inbox.

    The stored copy travels back in the SendResult and is written with the email's outcome, in
    the same transaction (send threads never touch the database).
    """

    def _send(self, message: EmailMessage) -> SendResult:
        from mailqueue.models import CapturedMessage

        captured = CapturedMessage(
            email_id=getattr(message, "mailqueue_email_id", None),
            message_id=message_id(message),
            from_email=message.from_email,
            to=list(message.recipients()),
            subject=" ".join(str(message.subject).split()),
            mime=message.message().as_string(),
        )
        return SendResult(message_id=captured.message_id, captured=captured)
