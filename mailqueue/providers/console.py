"""The `console` provider: prints each message to the worker's standard output."""

import sys

from django.core.mail import EmailMessage
from django.core.mail.backends.console import EmailBackend

from mailqueue.providers.base import Provider, SendResult


class ConsoleProvider(Provider):
    """Writes the full MIME message to stdout; for local debugging."""

    def _open(self) -> None:
        self.backend = EmailBackend(stream=sys.stdout)

    def _send(self, message: EmailMessage) -> SendResult:
        self.backend.send_messages([message])
        return SendResult(message_id=message.extra_headers["Message-ID"].strip("<>"))
