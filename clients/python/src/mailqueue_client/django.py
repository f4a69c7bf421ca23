"""Django email backend: `EMAIL_BACKEND = "mailqueue_client.django.EmailBackend"`.

Settings (read each time a connection opens, so tests can override them):
`MAILQUEUE_URL` (the service, e.g. `https://mail.example.com`), `MAILQUEUE_API_KEY`, and
optionally `MAILQUEUE_TIMEOUT` (seconds, default 10).

Each EmailMessage becomes one `POST /api/v1/emails/`; one with `merge_data` becomes one
`POST /api/v1/batches/`. Extra attributes use anymail's names: `template_id`,
`merge_global_data`, `merge_data`, `merge_metadata`, `send_at`, `tags`, `metadata`,
`track_opens`, `track_clicks`, plus Mailqueue's own `priority` and `idempotency_key`.

Errors: every exception raised is a `mailqueue_client.MailqueueError`, which subclasses
`smtplib.SMTPException` (see errors.py), so `except SMTPException` around `send_mail()` still
works; `fail_silently=True` swallows them as Django's SMTP backend does.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from email.message import Message
from email.utils import formataddr, getaddresses, parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from mailqueue_client.client import Attachment, Mailqueue
from mailqueue_client.errors import MailqueueError, UnsupportedFeature

DEFAULT_TIMEOUT = 10.0
# Recipient fields a batch cannot carry: each of its emails has only its own `to`.
_NOT_IN_BATCHES = ("cc", "bcc", "reply_to", "headers", "attachments", "html", "text", "subject")


def _setting(name: str, default: Any = None, *, required: bool = False) -> Any:
    """A setting read now, or a clear configuration error when a required one is missing."""
    value = getattr(settings, name, default)
    if required and not value:
        raise ImproperlyConfigured(
            f"{name} must be set to use mailqueue_client.django.EmailBackend "
            "(MAILQUEUE_URL: the service's URL without /api/v1/; MAILQUEUE_API_KEY: a key "
            "with the `send` scope)."
        )
    return value


class EmailBackend(BaseEmailBackend):
    """Sends Django EmailMessages through a Mailqueue service's API."""

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.client: Mailqueue | None = None

    def open(self) -> bool:
        """Create the API client (one pooled session); True when this call created it."""
        if self.client is not None:
            return False
        self.client = Mailqueue(
            self.base_url or _setting("MAILQUEUE_URL", required=True),
            self.api_key or _setting("MAILQUEUE_API_KEY", required=True),
            timeout=float(self.timeout or _setting("MAILQUEUE_TIMEOUT", DEFAULT_TIMEOUT)),
        )
        return True

    def close(self) -> None:
        """Close the API client's connections."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send each message; the number the service accepted. Raises the first failure's
        MailqueueError (with the API's reason) unless `fail_silently`."""
        if not email_messages:
            return 0
        created = self.open()
        accepted = 0
        try:
            for message in email_messages:
                if not message.recipients():
                    continue  # as Django's own backends do: nothing to send, nothing counted
                try:
                    self.send_message(message)
                except MailqueueError:
                    if not self.fail_silently:
                        raise
                else:
                    accepted += 1
        finally:
            if created:
                self.close()
        return accepted

    def send_message(self, message: EmailMessage) -> dict[str, Any]:
        """Send one message as an email (or a batch with `merge_data`); the API's answer,
        also kept on the message as `message.mailqueue_response`."""
        if self.client is None:
            self.open()
        assert self.client is not None
        fields = message_fields(message)
        idempotency_key = getattr(message, "idempotency_key", None)
        merge_data = getattr(message, "merge_data", None)
        if merge_data is not None:
            answer = self.client.batches.send(
                **batch_fields(message, fields, merge_data), idempotency_key=idempotency_key
            )
        else:
            answer = self.client.emails.send(**fields, idempotency_key=idempotency_key)
        message.mailqueue_response = answer  # type: ignore[attr-defined]
        return answer


def message_fields(message: EmailMessage) -> dict[str, Any]:
    """The API fields of one Django EmailMessage (for POST /api/v1/emails/)."""
    headers = {str(name): str(value) for name, value in (message.extra_headers or {}).items()}
    from_email = message.from_email
    reply_to = list(message.reply_to or [])
    # Django lets extra_headers override From and Reply-To: the API has fields for them.
    for name in list(headers):
        lowered = name.lower()
        if lowered == "from":
            from_email = headers.pop(name)
        elif lowered == "reply-to":
            value = headers.pop(name)
            if not reply_to:
                reply_to = [formataddr(pair) for pair in getaddresses([value]) if pair[1]]
    text, html = _bodies(message)
    fields: dict[str, Any] = {
        "to": _strings(message.to),
        "cc": _strings(message.cc) or None,
        "bcc": _strings(message.bcc) or None,
        "reply_to": _strings(reply_to) or None,
        "from_email": str(from_email) if from_email else None,
        "subject": str(message.subject) if message.subject else message.subject,
        "text": text,
        "html": html,
        "headers": headers or None,
        "attachments": [_attachment(item) for item in message.attachments] or None,
    }
    template = getattr(message, "template_id", None)
    if template:
        fields["template"] = template
        fields["context"] = getattr(message, "merge_global_data", None)
        # A template brings its own subject and bodies; the API refuses both at once, so only
        # content the caller really set is sent (and refused with a message saying so).
        for name in ("subject", "text", "html"):
            if not fields[name]:
                fields[name] = None
    elif getattr(message, "merge_global_data", None) is not None:
        raise UnsupportedFeature("merge_global_data needs a template_id.")
    fields["send_at"] = _send_at(getattr(message, "send_at", None))
    for name in ("tags", "metadata", "priority", "track_opens", "track_clicks"):
        fields[name] = getattr(message, name, None)
    return fields


def batch_fields(
    message: EmailMessage, fields: dict[str, Any], merge_data: dict[str, Any]
) -> dict[str, Any]:
    """POST /api/v1/batches/ fields: one recipient per `to` address, with its `merge_data`
    entry as its context and `metadata` plus its `merge_metadata` entry as its metadata."""
    if not fields.get("template"):
        raise UnsupportedFeature("merge_data needs a template_id (a batch sends a template).")
    refused = [name for name in _NOT_IN_BATCHES if fields.get(name)]
    if refused:
        raise UnsupportedFeature(
            f"A message with merge_data is sent as a batch, which cannot carry: "
            f"{', '.join(refused)}."
        )
    merge_metadata = getattr(message, "merge_metadata", None) or {}
    metadata = fields.get("metadata") or {}
    recipients = []
    for address in fields["to"]:
        bare = parseaddr(address)[1]
        recipient: dict[str, Any] = {"to": [address], "context": merge_data.get(bare, {})}
        if metadata or bare in merge_metadata:
            recipient["metadata"] = {**metadata, **merge_metadata.get(bare, {})}
        recipients.append(recipient)
    return {
        "template": fields["template"],
        "context": fields.get("context"),
        "recipients": recipients,
        "from_email": fields.get("from_email"),
        "priority": fields.get("priority"),
        "send_at": fields.get("send_at"),
        "tags": fields.get("tags"),
        "track_opens": fields.get("track_opens"),
        "track_clicks": fields.get("track_clicks"),
    }


def _strings(values: Sequence[Any] | None) -> list[str]:
    """Addresses as plain strings (Django accepts lazy translation strings there)."""
    return [str(value) for value in values or []]


def _bodies(message: EmailMessage) -> tuple[str | None, str | None]:
    """(text, html): the body by its `content_subtype`, and the alternatives by MIME type."""
    text: str | None = None
    html: str | None = None
    body = str(message.body) if message.body else None
    if message.content_subtype == "html":
        html = body
    else:
        text = body
    for alternative in getattr(message, "alternatives", None) or []:
        content, mimetype = alternative[0], alternative[1]
        if isinstance(content, bytes):
            content = content.decode()
        if mimetype == "text/html" and html is None:
            html = content
        elif mimetype == "text/plain" and text is None:
            text = content
        else:
            raise UnsupportedFeature(
                f"An alternative of type {mimetype} (Mailqueue sends one text/plain and one "
                "text/html body)."
            )
    return text, html


def _attachment(item: Any) -> Attachment:
    """An API attachment from Django's (filename, content, mimetype) or a MIME part; a part
    with a Content-ID becomes an inline part with that `content_id`."""
    if isinstance(item, Message):
        if item.is_multipart():
            raise UnsupportedFeature("A multipart attachment (attach its parts one by one).")
        raw = item.get_payload(decode=True) or b""
        content_id = (item.get("Content-ID") or "").strip().strip("<>")
        filename = item.get_filename() or content_id or "attachment"
        result: Attachment = {
            "filename": filename,
            "content": base64.b64encode(raw).decode("ascii"),
            "mimetype": item.get_content_type(),
        }
        if content_id:
            result["content_id"] = content_id
        return result
    filename, content, mimetype = item[0], item[1], item[2]
    if isinstance(content, EmailMessage):
        content = content.message()
    if isinstance(content, Message):
        # A forwarded message (message/rfc822), as Django's own attach() accepts it.
        raw = content.as_bytes()
    elif isinstance(content, str):
        raw = content.encode()
    else:
        raw = bytes(content)
    result = {"filename": filename or "attachment", "content": base64.b64encode(raw).decode()}
    if mimetype:
        result["mimetype"] = mimetype
    return result


def _send_at(value: dt.datetime | dt.date | str | None) -> str | None:
    """ISO 8601 with a zone: a naive datetime is in Django's current time zone (as anymail)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(0, 0))
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_current_timezone())
    return value.isoformat()
