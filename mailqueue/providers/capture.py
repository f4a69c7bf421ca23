"""The `capture` provider: a built-in inbox that stores the exact MIME message in the database."""

from django.core.mail import EmailMessage

from mailqueue.providers.base import Provider, SendResult, delivery_error


class CaptureProvider(Provider):
    """Stores messages instead of sending them; browse them in the admin's capture inbox.

    The stored copy travels back in the SendResult and is written with the email's outcome, in
    the same transaction (send threads never touch the database).
    """

    def _send(self, message: EmailMessage) -> SendResult:
        from mailqueue.models import CapturedMessage

        mime = message.message()
        message_id = mime["Message-ID"].strip("<>")
        captured = CapturedMessage(
            email_id=getattr(message, "mailqueue_email_id", None),
            message_id=message_id,
            from_email=message.from_email,
            to=list(message.recipients()),
            subject=" ".join(str(message.subject).split()),
            mime=mime.as_string(),
        )
        return SendResult(message_id=message_id, captured=captured)

    def _classify(self, exc: Exception):
        return delivery_error(exc, transient=True)
