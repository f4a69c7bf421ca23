"""The SMTP provider's direct message builder writes what Django's would, or steps aside."""

import email
from email import policy

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives

from mailqueue.providers.mime import fast_message_bytes


def _message(**overrides) -> EmailMultiAlternatives:
    fields = {
        "subject": "Your order 42",
        "body": "Hello Ada,\nyour order ships today.\n",
        "from_email": "Shop <shop@example.com>",
        "to": ["ada@example.com", "Bob Example <bob@example.com>"],
        "cc": ["carol@example.com"],
        "bcc": ["audit@example.com"],
        "reply_to": ["help@example.com"],
        "headers": {"Message-ID": "<abc@example.com>", "X-Campaign": "spring"},
    }
    html = overrides.pop("html", "<p>Hello <b>Ada</b></p>")
    message = EmailMultiAlternatives(**{**fields, **overrides})
    if html:
        message.attach_alternative(html, "text/html")
    return message


def _shape(data: bytes) -> dict:
    """What a mail client sees: headers (but the random boundary and the clock) and parts."""
    parsed = email.message_from_bytes(data, policy=policy.compat32)
    parts = parsed.get_payload() if parsed.is_multipart() else [parsed]
    return {
        "headers": [
            (name, " ".join(str(value).split()))
            for name, value in parsed.items()
            if name not in {"Date", "Content-Type"}
        ],
        "type": parsed.get_content_type(),
        "parts": [
            (
                part.get_content_type(),
                part.get_content_charset(),
                part["Content-Transfer-Encoding"],
                part.get_payload(decode=True),
            )
            for part in parts
        ],
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"html": None},
        {"html": None, "body": "Plain only, ünïcödé body ✓"},
        {"body": "Zeile eins\nZeile zwei: Grüße", "html": "<p>Grüße</p>"},
        {"cc": [], "reply_to": [], "to": ["solo@example.com"]},
        {"body": "no trailing newline"},
        {"body": ".leading dot\r\nand CRLF already\r\n"},
    ],
)
def test_same_message_as_django_builds(overrides):
    """Headers, parts, charsets, transfer encodings and decoded bodies match Django's output."""
    message = _message(**overrides)

    fast = fast_message_bytes(message)

    assert fast is not None
    assert _shape(fast) == _shape(message.message().as_bytes(linesep="\r\n"))
    assert b"audit@example.com" not in fast  # Bcc is envelope only
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))


def test_html_only_email_is_one_html_part():
    """An email with only HTML (content_subtype html) is a single text/html part."""
    message = EmailMessage(
        subject="Hi",
        body="<p>Hi</p>",
        from_email="a@example.com",
        to=["b@example.com"],
        headers={"Message-ID": "<x@example.com>"},
    )
    message.content_subtype = "html"

    fast = fast_message_bytes(message)

    assert _shape(fast) == _shape(message.message().as_bytes(linesep="\r\n"))
    assert _shape(fast)["type"] == "text/html"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"subject": "Grüße aus Köln"}, "a non-ASCII subject needs RFC 2047 encoding"),
        ({"subject": "x" * 200}, "a long subject needs folding"),
        ({"to": ["Zoë <zoe@example.com>"]}, "a non-ASCII display name needs encoding"),
        ({"to": ["user@bücher.example"]}, "an IDN domain needs punycode"),
        ({"body": "a" * 1200}, "a line over 998 bytes needs quoted-printable"),
        ({"headers": {"Message-ID": "<x@example.com>", "X-Note": "ünï"}}, "non-ASCII header"),
        ({"headers": {"Message-ID": "<x@example.com>", "To": "other@example.com"}}, "To header"),
        ({"headers": {}}, "no Message-ID of ours"),
    ],
)
def test_other_shapes_are_left_to_django(overrides, why):
    """Anything beyond the common shape is built by Django (the caller falls back)."""
    assert fast_message_bytes(_message(**overrides)) is None, why


def test_attachments_are_left_to_django():
    """A message with an attachment is Django's to build."""
    message = _message()
    message.attach("a.txt", b"data", "text/plain")

    assert fast_message_bytes(message) is None
