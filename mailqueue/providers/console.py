"""The `console` provider: prints each message to the worker's standard output."""

import sys

from django.core.mail import EmailMessage
from django.core.mail.backends.console import EmailBackend

from mailqueue.providers.base import Provider


class ConsoleProvider(Provider):
    """Writes the full MIME message to stdout; for local debugging."""

    def _open(self) -> None:
        self.backend = EmailBackend(stream=sys.stdout)

    def _send(self, message: EmailMessage) -> str:
        self.backend.send_messages([message])
        return message.extra_headers["Message-ID"].strip("<>")
