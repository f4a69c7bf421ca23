"""The client and the Django backend against the real service: the live server, a real worker
and a real SMTP server (tests/clients/conftest.py). What arrives at the SMTP server is checked
part by part."""

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage as MimeMessage
from email.mime.image import MIMEImage

import pytest
from django.core import mail
from mailqueue_client import (
    AuthenticationError,
    Mailqueue,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationError,
    attachment,
)

from mailqueue.models import EmailJob
from mailqueue.services import api_key_create
from tests.live import PROJECT_DIR
from tests.smtp_sink import Received

BACKEND = "mailqueue_client.django.EmailBackend"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _by_subject(messages: list[Received]) -> dict[str, Received]:
    return {str(item.message["Subject"]): item for item in messages}


def _parts(message: MimeMessage) -> dict[str, MimeMessage]:
    """The leaf parts by content type (the last one of a type wins)."""
    return {part.get_content_type(): part for part in message.walk() if not part.is_multipart()}


def _assert_every_part(received: Received, *, html: str, text: str) -> None:
    """The message of the "every part" sends: bodies, file, inline image, envelope, headers."""
    message = received.message
    assert sorted(received.rcpt_tos) == [
        "ada@example.com",
        "audit@example.com",
        "ops@example.com",
    ]
    assert message["To"] == "Ada <ada@example.com>"
    assert message["Cc"] == "ops@example.com"
    assert message["Bcc"] is None
    assert message["Reply-To"] == "support@example.com"
    assert message["From"] == "Acme <hello@example.com>"
    assert message["X-Campaign"] == "reports"
    parts = _parts(message)
    assert parts["text/plain"].get_content().strip() == text
    assert html in parts["text/html"].get_content()
    report = parts["text/csv"]
    assert report.get_filename() == "report.csv"
    assert report.get_content_disposition() == "attachment"
    # Text parts travel with CRLF line ends (RFC 5322), whatever the sender wrote.
    assert report.get_payload(decode=True).replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    logo = parts["image/png"]
    assert logo["Content-ID"] == "<logo@acme>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_payload(decode=True) == PNG


def test_client_send_is_delivered_once_with_every_part(service):
    """One send with html, text, cc, bcc, reply-to, a header, a file and an inline image
    (content_id) arrives as one message; the same Idempotency-Key sent again is answered with
    the first acceptance and sends nothing more."""
    client = Mailqueue(service.url, service.key)
    fields = {
        "to": "Ada <ada@example.com>",
        "cc": ["ops@example.com"],
        "bcc": ["audit@example.com"],
        "reply_to": "support@example.com",
        "from_email": "Acme <hello@example.com>",
        "subject": "Your report",
        "text": "See the report.",
        "html": '<p>See the report. <img src="cid:logo@acme"></p>',
        "headers": {"X-Campaign": "reports"},
        "attachments": [
            attachment("report.csv", b"a,b\n1,2\n", "text/csv"),
            attachment("logo.png", PNG, "image/png", content_id="logo@acme"),
        ],
        "idempotency_key": f"report-{uuid.uuid4()}",
    }

    first = client.emails.send(**fields)
    again = client.emails.send(**fields)
    (received,) = service.delivered(1)

    assert again["id"] == first["id"] and first["status"] == "queued"
    _assert_every_part(received, html='<img src="cid:logo@acme">', text="See the report.")
    assert client.emails.get(first["id"])["status"] == "sent"
    assert EmailJob.objects.count() == 1


def test_client_covers_the_api_against_the_real_service(service, settings):
    """Templates, a templated send, a batch, reads with pages, suppressions, topics and
    subscribers, schedules, event rules, webhooks, the error classes, one-time codes (whose
    429 is raised at once), queues and failed emails (admin key)."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    client = Mailqueue(service.url, service.key)
    client.templates.create(
        slug="welcome",
        name="Welcome",
        subject="Welcome, {{ name }}",
        text="Hello {{ name }}",
        variables=["name"],
    )
    assert client.templates.render("welcome", {"name": "Ada"})["subject"] == "Welcome, Ada"
    assert client.templates.update("welcome", name="Hello")["name"] == "Hello"
    assert [item["slug"] for item in client.templates.list()] == ["welcome"]

    single = client.emails.send(to="ada@example.com", template="welcome", context={"name": "Ada"})
    batch = client.batches.send(
        template="welcome",
        recipients=[
            {"to": "bob@example.com", "context": {"name": "Bob"}},
            {"to": ["cy@example.com"], "context": {"name": "Cy"}, "metadata": {"n": 3}},
        ],
        tags=["batch"],
    )
    messages = _by_subject(service.delivered(3))
    assert set(messages) == {"Welcome, Ada", "Welcome, Bob", "Welcome, Cy"}
    assert client.batches.get(batch["id"])["count"] == 2

    page = client.emails.list(page_size=2)
    assert len(page.results) == 2 and page.next_cursor
    every = [item["id"] for item in client.emails.iterate(page_size=2)]
    assert len(every) == 3 and single["id"] in every
    assert [item["to"] for item in client.emails.iterate(batch=batch["id"], to="cy@example.com")]

    with pytest.raises(ValidationError) as refused:
        client.emails.send(to="not an address", subject="s", text="t")
    assert "to" in refused.value.field_errors and refused.value.status == 400
    with pytest.raises(NotFound):
        client.emails.get(str(uuid.uuid4()))
    with pytest.raises(PermissionDenied):
        client.queues.list()
    with pytest.raises(AuthenticationError):
        Mailqueue(service.url, "mq_nope_nope").emails.list()

    client.suppressions.add("blocked@example.com")
    assert [s["address"] for s in client.suppressions.iterate()] == ["blocked@example.com"]
    client.suppressions.remove("blocked@example.com")
    assert client.suppressions.list().results == []

    client.topics.create(slug="news", name="News", subject="News", text="Hi")
    client.subscribers.subscribe("news", "Reader+x@Example.com", context={"name": "R"})
    assert client.subscribers.get("news", "reader+x@example.com")["status"] == "active"
    client.subscribers.unsubscribe("news", "reader+x@example.com")
    assert [s["status"] for s in client.subscribers.iterate("news")] == ["unsubscribed"]
    assert [t["slug"] for t in client.topics.iterate()] == ["news"]

    schedule = client.schedules.create(
        name="Weekly", recipients=["ops@example.com"], template="welcome", cron="0 9 * * 1"
    )
    assert client.schedules.pause(schedule["id"])["active"] is False
    assert client.schedules.resume(schedule["id"])["active"] is True
    assert [s["id"] for s in client.schedules.iterate()] == [schedule["id"]]
    client.schedules.delete(schedule["id"])

    rule = client.event_rules.create(
        event_type="user.signed_up", template="welcome", recipient_path="user.email"
    )
    assert [r["id"] for r in client.event_rules.list()] == [rule["id"]]
    client.event_rules.delete(rule["id"])

    hook = client.webhooks.create("http://127.0.0.1:9/hooks", ["delivered"])
    assert hook["secret"]
    assert client.webhooks.update(hook["id"], events=["*"])["events"] == ["*"]
    client.webhooks.delete(hook["id"])
    assert client.webhooks.list() == []

    client.templates.create(
        slug="email-verification", name="Code", subject="Code {{ code }}", text="{{ code }}"
    )
    issued = client.otp.send("ada@example.com")
    assert issued["id"] and "code" not in issued
    started = time.monotonic()
    with pytest.raises(RateLimited) as too_soon:
        client.otp.send("ada@example.com")
    assert too_soon.value.retry_after and time.monotonic() - started < 2
    code = service.delivered(4)[-1].message["Subject"].removeprefix("Code ")
    assert client.otp.verify("ada@example.com", "000000" if code != "000000" else "111111") == {
        "verified": False,
        "reason": "invalid",
    }
    assert client.otp.verify("ada@example.com", code) == {"verified": True}

    admin = Mailqueue(service.url, api_key_create(client_name="acme", scopes=["admin"]).plaintext)
    assert {q["name"] for q in admin.queues.list()["queues"]} >= {"high", "default", "low"}
    assert admin.queues.pause("low")["paused"] is True
    assert admin.queues.resume("low")["paused"] is False
    assert admin.failed.list() == {"results": [], "truncated": False}
    assert admin.failed.retry(template="welcome") == {"retried": 0, "skipped": 0}


def test_django_backend_in_process_delivers_every_part(service, settings):
    """EmailMultiAlternatives with an html alternative, a file, an inline MIMEImage with a
    Content-ID, cc/bcc/reply-to and a custom header arrives as it was written; send_mass_mail
    counts what the service accepted."""
    settings.MAILQUEUE_URL = service.url
    settings.MAILQUEUE_API_KEY = service.key
    connection = mail.get_connection(BACKEND)
    message = mail.EmailMultiAlternatives(
        subject="Your report",
        body="See the report.",
        from_email="Acme <hello@example.com>",
        to=["Ada <ada@example.com>"],
        cc=["ops@example.com"],
        bcc=["audit@example.com"],
        reply_to=["support@example.com"],
        headers={"X-Campaign": "reports"},
        connection=connection,
    )
    message.attach_alternative('<p>See the report. <img src="cid:logo@acme"></p>', "text/html")
    message.attach("report.csv", b"a,b\n1,2\n", "text/csv")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@acme>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message.attach(logo)

    assert message.send() == 1
    (received,) = service.delivered(1)
    _assert_every_part(received, html='<img src="cid:logo@acme">', text="See the report.")

    datatuple = [
        ("Mass one", "One", None, ["one@example.com"]),
        ("Mass two", "Two", None, ["two@example.com"]),
    ]
    assert mail.send_mass_mail(datatuple, connection=connection) == 2
    assert {"Mass one", "Mass two"} <= set(_by_subject(service.delivered(3)))


def test_django_project_runs_djangos_mail_scenarios(service):
    """A separate Django project whose only mail settings are EMAIL_BACKEND, MAILQUEUE_URL and
    MAILQUEUE_API_KEY runs scenarios from Django's own mail tests through the service."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "MAILQUEUE_", "EMAIL_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.clients.django_project.settings",
        MAILQUEUE_URL=service.url,
        MAILQUEUE_API_KEY=service.key,
        PYTHONPATH=str(PROJECT_DIR),
    )
    run = subprocess.run(
        [sys.executable, "-m", "tests.clients.django_project.scenarios"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    outcomes = json.loads(run.stdout)

    refusal = outcomes.pop("test_refusal_raises_smtp_exception")
    assert refusal["raised"] == "ValidationError" and refusal["smtp_exception"] is True
    assert "to" in refusal["message"] and "400" in refusal["message"]
    assert outcomes == {
        "test_send": {"returned": 1},
        "test_send_unicode": {"returned": 1},
        "test_send_many": {"returned": 2},
        "test_send_verbose_name": {"returned": 1},
        "test_html_send_mail": {"returned": 1},
        "test_html_mail_admins": {"returned": None},
        "test_message_cc_header": {"returned": 1},
        "test_attachments": {"returned": 1},
        "test_reply_to_and_bcc": {"returned": 1},
        "test_send_mass_mail": {"returned": 2},
        "test_use_as_contextmanager": {"returned": 1},
        "test_send_messages_empty_list": {"returned": 0},
        "test_fail_silently": {"returned": 0},
    }

    messages = _by_subject(service.delivered(13))
    assert len(service.sink.messages) == 13
    sent = messages["test_send: Subject"]
    assert (sent.message["From"], sent.message["To"]) == ("from@example.com", "to@example.com")
    assert sent.message.get_content().strip() == "Content"
    unicode = messages["test_send_unicode: Chère maman"].message
    assert unicode.get_content().strip() == "Je t'aime très fort"
    assert {"test_send_many: one", "test_send_many: two"} <= set(messages)
    verbose = messages["test_send_verbose_name: Subject"].message
    assert verbose["From"].addresses[0].display_name == "Firstname Sürname"
    assert verbose["From"].addresses[0].addr_spec == "from@example.com"
    html = _parts(messages["test_html_send_mail: Subject"].message)
    assert html["text/plain"].get_content().strip() == "Content"
    assert html["text/html"].get_content().strip() == "HTML Content"
    admins = messages["[Django] test_html_mail_admins: Subject"]
    assert admins.rcpt_tos == ["admin@example.com"]
    assert admins.message["From"] == "root@example.com"
    assert "HTML Content" in _parts(admins.message)["text/html"].get_content()
    cc = messages["test_message_cc_header: Subject"]
    assert cc.message["Cc"] == "cc@example.com"
    assert sorted(cc.rcpt_tos) == ["cc@example.com", "to@example.com"]
    attached = messages["test_attachments: Subject"].message
    parts = _parts(attached)
    assert "<strong>important</strong>" in parts["text/html"].get_content()
    assert parts["application/pdf"].get_filename() == "an attachment.pdf"
    assert parts["application/pdf"].get_payload(decode=True) == b"%PDF-1.4.%\xe2\xe3\xcf\xd3 test"
    assert attached["X-Test"] == "attachments"
    replied = messages["test_reply_to_and_bcc: Subject"]
    assert replied.message["Reply-To"] == "reply_to@example.com"
    assert replied.message["Bcc"] is None
    assert sorted(replied.rcpt_tos) == ["bcc@example.com", "to@example.com"]
    assert {"test_send_mass_mail: one", "test_send_mass_mail: two"} <= set(messages)
    assert "test_use_as_contextmanager: Subject" in messages
