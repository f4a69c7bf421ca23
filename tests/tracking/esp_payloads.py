"""ESP webhook payloads from tests/fixtures/esp/, and the emails and credentials they name."""

import base64
import json
from pathlib import Path

from django.test import Client as HttpClient

from mailqueue.models import Client, EmailJob, EmailStatus
from mailqueue.services import email_create

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "esp"
WEBHOOK_SECRET = "esp-hook:s3cret-Pa55"
BASIC_AUTH = "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()


def payload(name: str, **placeholders: str) -> str:
    """A fixture's text with its placeholders (EMAIL_ID, ...) replaced."""
    text = (FIXTURES / name).read_text()
    for placeholder, value in placeholders.items():
        text = text.replace(placeholder, value)
    return text


def sent_email(
    client: Client,
    *,
    to: str = "ada@example.com",
    message_id: str = "",
    provider: str = "",
    **extra,
) -> EmailJob:
    """An email the provider accepted under `message_id` (as the worker leaves it)."""
    email = email_create(client=client, to=[to], subject="Your receipt", text="Thanks", **extra)
    EmailJob.objects.filter(pk=email.pk).update(
        status=EmailStatus.SENT, message_id=message_id, provider=provider
    )
    email.refresh_from_db()
    return email


def post_json(path: str, body: str | bytes, **headers: str):
    """POST a JSON body through the whole Django stack, as an ESP does."""
    return HttpClient().generic("POST", path, body, content_type="application/json", **headers)


def as_json(value: object) -> str:
    """JSON text of a value."""
    return json.dumps(value)
