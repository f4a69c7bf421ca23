"""The `smtp` provider: Django's SMTP backend with one connection kept open across emails."""

import smtplib
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address

from mailqueue import conf, dkim
from mailqueue.errors import DeliveryError
from mailqueue.providers.base import BackendProvider, SendResult, delivery_error, message_id
from mailqueue.providers.mime import fast_message_bytes


class RecordingSmtpBackend(EmailBackend):
    """Django's SMTP backend that keeps the recipients the server refused, builds common
    messages without the `email` package, and signs them with DKIM where the sender's domain
    has a key.

    Django drops `sendmail()`'s answer; when a server accepts the message for some recipients
    and refuses others, that answer is the only record of who will not get it.
    """

    refused: dict

    def _send(self, email_message: EmailMessage) -> bool:
        """Django's `_send` (without fail_silently), keeping sendmail's refused recipients."""
        self.refused = {}
        if not email_message.recipients():
            return False
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        # The envelope needs only the bare addresses; Django's sanitize_address parses each
        # with the `email` package, which costs more than the SMTP exchange's own CPU.
        from_email = _envelope_address(email_message.from_email, encoding)
        recipients = [_envelope_address(addr, encoding) for addr in email_message.recipients()]
        data = fast_message_bytes(email_message)
        if data is None:
            data = email_message.message().as_bytes(linesep="\r\n")
        data = dkim.sign(data, from_email)
        self.refused = self.connection.sendmail(from_email, recipients, data)
        return True


def _envelope_address(value: str, encoding: str) -> str:
    """The addr-spec smtplib puts in MAIL FROM / RCPT TO (non-ASCII goes through Django)."""
    if value.isascii():
        address = parseaddr(value)[1]
        if address.count("@") == 1:
            return address
    return sanitize_address(value, encoding)


class SmtpProvider(BackendProvider):
    """Delivers over SMTP using the settings of EMAIL_URL."""

    backend: RecordingSmtpBackend | None

    def _make_backend(self) -> RecordingSmtpBackend:
        # A missing option is None, which Django's backend replaces with its own default.
        options = conf.smtp_settings()
        return RecordingSmtpBackend(
            host=options.get("EMAIL_HOST"),
            port=options.get("EMAIL_PORT"),
            username=options.get("EMAIL_HOST_USER"),
            password=options.get("EMAIL_HOST_PASSWORD"),
            use_tls=bool(options.get("EMAIL_USE_TLS")),
            use_ssl=bool(options.get("EMAIL_USE_SSL")),
            timeout=conf.smtp_timeout(),
            fail_silently=False,
        )

    def _send(self, message: EmailMessage) -> SendResult:
        try:
            self._send_once(message)
        except smtplib.SMTPServerDisconnected:
            # The server dropped an idle connection between two emails: reconnect once.
            self.close()
            self.open()
            self._send_once(message)
        assert self.backend is not None
        return SendResult(
            message_id=message_id(message),
            rejected={
                address: f"{code} {_text(reply)}"
                for address, (code, reply) in (self.backend.refused or {}).items()
            },
        )

    def _send_once(self, message: EmailMessage) -> None:
        if self._deliver(message) != 1:
            raise DeliveryError("The SMTP server accepted no recipient.", transient=False)

    def _classify(self, exc: Exception) -> DeliveryError | None:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            details = "; ".join(
                f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in exc.recipients.items()
            )
            transient = any(400 <= code < 500 for code in codes)
            return delivery_error(
                exc, transient=transient, message=f"Recipients refused: {details}"
            )
        if isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPConnectError)):
            # Bad credentials, or a server refusing sessions at its greeting (421): the
            # provider's problem, not the message's: try another, and count it against it.
            return delivery_error(exc, transient=True, message=_smtp_reply(exc), outage=True)
        if isinstance(exc, smtplib.SMTPResponseException):
            return delivery_error(exc, transient=exc.smtp_code < 500, message=_smtp_reply(exc))
        if isinstance(exc, (smtplib.SMTPException, OSError)):
            # Disconnects, refused connections, timeouts, TLS failures: the server is out of reach.
            return delivery_error(exc, transient=True, outage=True)
        return None


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"
