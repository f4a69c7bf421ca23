"""Scenarios adapted from Django's own mail tests (tests/mail/tests.py: BaseEmailBackendTests
and MailTests), run in this project through its EMAIL_BACKEND. Prints one JSON object: what each
scenario's call returned, or the exception it raised. The calling test checks that object and
the messages that reached the SMTP server.

Run: DJANGO_SETTINGS_MODULE=tests.clients.django_project.settings \
     python -m tests.clients.django_project.scenarios
"""

import json
import smtplib
import sys
from collections.abc import Callable
from typing import Any

import django

django.setup()

from django.core import mail  # noqa: E402

PDF = b"%PDF-1.4.%\xe2\xe3\xcf\xd3 test"


def test_send() -> int:
    """BaseEmailBackendTests.test_send: one message through send_messages."""
    email = mail.EmailMessage(
        "test_send: Subject", "Content", "from@example.com", ["to@example.com"]
    )
    return mail.get_connection().send_messages([email])


def test_send_unicode() -> int:
    """BaseEmailBackendTests.test_send_unicode: non-ASCII subject and body."""
    email = mail.EmailMessage(
        "test_send_unicode: Chère maman", "Je t'aime très fort", None, ["to@example.com"]
    )
    return mail.get_connection().send_messages([email])


def test_send_many() -> int:
    """BaseEmailBackendTests.test_send_many: two messages, both counted."""
    emails = [
        mail.EmailMessage("test_send_many: one", "Content", None, ["to-1@example.com"]),
        mail.EmailMessage("test_send_many: two", "Content", None, ["to-2@example.com"]),
    ]
    return mail.get_connection().send_messages(emails)


def test_send_verbose_name() -> int:
    """BaseEmailBackendTests.test_send_verbose_name: a display name with non-ASCII letters."""
    email = mail.EmailMessage(
        "test_send_verbose_name: Subject",
        "Content",
        '"Firstname Sürname" <from@example.com>',
        ["to@example.com"],
    )
    return email.send()


def test_html_send_mail() -> int:
    """BaseEmailBackendTests.test_html_send_mail: send_mail with html_message."""
    return mail.send_mail(
        "test_html_send_mail: Subject",
        "Content",
        "sender@example.com",
        ["nobody@example.com"],
        html_message="HTML Content",
    )


def test_html_mail_admins() -> None:
    """BaseEmailBackendTests.test_html_mail_admins: ADMINS get it, from SERVER_EMAIL, with the
    subject prefix."""
    mail.mail_admins("test_html_mail_admins: Subject", "Content", html_message="HTML Content")


def test_message_cc_header() -> int:
    """BaseEmailBackendTests.test_message_cc_header: Cc is a header and a recipient."""
    email = mail.EmailMessage(
        "test_message_cc_header: Subject",
        "Content",
        "from@example.com",
        ["to@example.com"],
        cc=["cc@example.com"],
    )
    return mail.get_connection().send_messages([email])


def test_attachments() -> int:
    """MailTests.test_attachments: an HTML alternative and a PDF attachment."""
    email = mail.EmailMultiAlternatives(
        "test_attachments: Subject",
        "This is an important message.",
        "from@example.com",
        ["to@example.com"],
        headers={"X-Test": "attachments"},
    )
    email.attach_alternative("<p>This is an <strong>important</strong> message.</p>", "text/html")
    email.attach("an attachment.pdf", PDF, mimetype="application/pdf")
    return email.send()


def test_reply_to_and_bcc() -> int:
    """MailTests.test_reply_to and test_recipients_as_tuple: reply_to and bcc."""
    email = mail.EmailMessage(
        "test_reply_to_and_bcc: Subject",
        "Content",
        "from@example.com",
        ("to@example.com",),
        bcc=("bcc@example.com",),
        reply_to=["reply_to@example.com"],
    )
    return email.send()


def test_send_mass_mail() -> int:
    """send_mass_mail returns how many messages were accepted."""
    datatuple = (
        ("test_send_mass_mail: one", "Content", "from@example.com", ["mass-1@example.com"]),
        ("test_send_mass_mail: two", "Content", "from@example.com", ["mass-2@example.com"]),
    )
    return mail.send_mass_mail(datatuple)


def test_use_as_contextmanager() -> int:
    """BaseEmailBackendTests.test_use_as_contextmanager: open, send, close."""
    email = mail.EmailMessage(
        "test_use_as_contextmanager: Subject", "Content", None, ["to@example.com"]
    )
    with mail.get_connection() as connection:
        return connection.send_messages([email])


def test_send_messages_empty_list() -> int:
    """An empty list sends nothing (BaseEmailBackend's contract)."""
    return mail.get_connection().send_messages([])


def test_fail_silently() -> int:
    """A refused message: fail_silently returns 0."""
    return mail.send_mail(
        "test_fail_silently: Subject", "Content", None, ["not an address"], fail_silently=True
    )


def test_refusal_raises_smtp_exception() -> int:
    """A refused message without fail_silently raises what SMTP callers catch."""
    return mail.send_mail("test_refusal: Subject", "Content", None, ["not an address"])


SCENARIOS: list[Callable[[], Any]] = [
    test_send,
    test_send_unicode,
    test_send_many,
    test_send_verbose_name,
    test_html_send_mail,
    test_html_mail_admins,
    test_message_cc_header,
    test_attachments,
    test_reply_to_and_bcc,
    test_send_mass_mail,
    test_use_as_contextmanager,
    test_send_messages_empty_list,
    test_fail_silently,
    test_refusal_raises_smtp_exception,
]


def main() -> None:
    """Run every scenario; print {name: {"returned": ...} or {"raised": ..., ...}}."""
    outcomes: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS:
        try:
            outcomes[scenario.__name__] = {"returned": scenario()}
        except Exception as exc:  # the calling test asserts on the class and message
            outcomes[scenario.__name__] = {
                "raised": type(exc).__name__,
                "smtp_exception": isinstance(exc, smtplib.SMTPException),
                "message": str(exc),
            }
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
