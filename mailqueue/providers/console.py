"""The `console` provider: prints each message to the worker's standard output."""

import sys

from django.core.mail import EmailMessage
from django.core.mail.backends.console import EmailBackend

from mailqueue.providers.base import BackendProvider, SendResult, message_id


class ConsoleProvider(BackendProvider):
    """Writes the full MIME message to stdout; for local debugging."""

    def _make_backend(self) -> EmailBackend:
        return EmailBackend(stream=sys.stdout)

    def _send(self, message: EmailMessage) -> SendResult:
        self._deliver(message)
        return SendResult(message_id=message_id(message))
