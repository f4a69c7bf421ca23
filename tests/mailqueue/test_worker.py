"""The worker against a real SMTP server: what goes out, what is stored, connection reuse."""

import base64

import pytest
from aiosmtpd.controller import Controller
from rq.job import Job

import mailqueue.services.delivery as delivery
from mailqueue.errors import InvalidTransition, ValidationFailed
from mailqueue.models import CapturedMessage, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import (
    BatchRecipient,
    batch_create,
    captured_message_release,
    email_create,
    template_send_test,
)
from mailqueue.tasks import deliver_emails
from templates_app.models import EmailTemplateVersion
from templates_app.services import template_create
from tests.helpers import queue_lengths, run_worker, sender_domains_verify
from tracking.models import EventType

pytestmark = pytest.mark.django_db

PDF_BYTES = b"%PDF-1.4 fake invoice\x00\x01\x02"


def _part(message, content_type: str) -> str:
    """The decoded body of the first MIME part of a type."""
    for part in message.walk():
        if part.get_content_type() == content_type and not part.get_filename():
            return part.get_content()
    raise AssertionError(f"no {content_type} part in the message")


def test_email_posted_through_the_api_reaches_the_smtp_server_as_asked(
    api, issued_key, smtp_sink, welcome_template, django_capture_on_commit_callbacks
):
    """Every field of the request shows up in the message the SMTP server receives."""
    sender_domains_verify(issued_key.api_key.client, "acme.test")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/emails/",
            {
                "to": ["Ada Lovelace <ada@example.com>"],
                "cc": ["cc@example.com"],
                "bcc": ["hidden@example.com"],
                "from_email": "Billing <billing@acme.test>",
                "template": "welcome",
                "context": {"name": "<b>Ada & co</b>"},
                "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@acme.test>"},
                "attachments": [
                    {
                        "filename": "invoice.pdf",
                        "content": base64.b64encode(PDF_BYTES).decode(),
                    }
                ],
            },
            format="json",
        )
    assert response.status_code == 202, response.json()

    run_worker()

    assert len(smtp_sink.messages) == 1
    received = smtp_sink.messages[0]
    msg = received.message
    assert received.mail_from == "billing@acme.test"
    assert sorted(received.rcpt_tos) == ["ada@example.com", "cc@example.com", "hidden@example.com"]
    assert msg["From"] == "Billing <billing@acme.test>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Cc"] == "cc@example.com"
    assert msg["Bcc"] is None
    assert "hidden@example.com" not in msg.as_string()
    assert msg["Subject"] == "Welcome, <b>Ada & co</b>!"
    assert msg["X-Campaign"] == "spring"
    assert msg["List-Unsubscribe"] == "<mailto:u@acme.test>"
    # The HTML part escapes the context; the text part shows it as typed.
    assert _part(msg, "text/html").strip() == "<p>Hello &lt;b&gt;Ada &amp; co&lt;/b&gt;</p>"
    assert _part(msg, "text/plain").strip() == "Hello <b>Ada & co</b>"
    attachments = [part for part in msg.iter_attachments()]
    assert [a.get_filename() for a in attachments] == ["invoice.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == PDF_BYTES

    email = EmailJob.objects.get(pk=response.json()["id"])
    assert email.status == EmailStatus.SENT
    assert email.sent_at is not None
    assert email.provider == "smtp"
    assert email.attempts == 1
    assert email.message_id == msg["Message-ID"].strip("<>")
    assert email.subject == "Welcome, <b>Ada & co</b>!"
    assert email.html == "<p>Hello &lt;b&gt;Ada &amp; co&lt;/b&gt;</p>"
    assert email.text == "Hello <b>Ada & co</b>"
    assert [e.event_type for e in email.events.all()] == [EventType.SENT]
    assert email.events.get().data["message_id"] == email.message_id
    attempt = email.delivery_attempts.get()
    assert (attempt.number, attempt.provider, attempt.outcome) == (
        1,
        "smtp",
        DeliveryAttempt.Outcome.SENT,
    )

    detail = api.get(f"/api/v1/emails/{email.pk}/").json()
    assert detail["status"] == "sent"
    assert detail["message_id"] == email.message_id


def test_raw_content_email_created_by_the_service_is_sent(
    issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """An email without a template goes out with its own subject and bodies, from the default
    sender."""
    with django_capture_on_commit_callbacks(execute=True):
        email = email_create(
            client=issued_key.api_key.client,
            to=["bob@example.com"],
            subject="Your code",
            html="<p>1234</p>",
            text="1234",
        )

    run_worker()

    [received] = smtp_sink.messages
    assert received.message["Subject"] == "Your code"
    assert received.message["From"] == "Mailqueue <noreply@localhost>"
    assert _part(received.message, "text/plain").strip() == "1234"
    assert _part(received.message, "text/html").strip() == "<p>1234</p>"
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.message_id == received.message["Message-ID"].strip("<>")


def test_recipient_refused_while_others_accept_is_recorded(
    issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """The server takes the message for To but refuses a Cc: sent, with a `rejected` event."""
    smtp_sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    with django_capture_on_commit_callbacks(execute=True):
        email = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            cc=["gone@example.com"],
            subject="Minutes",
            text="Attached.",
        )

    run_worker()

    [received] = smtp_sink.messages
    assert received.rcpt_tos == ["ada@example.com"]
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert "gone@example.com" in email.last_error and "550" in email.last_error
    rejected = email.events.get(event_type=EventType.REJECTED)
    assert rejected.recipient == "gone@example.com"
    assert "No such user" in rejected.description


def test_batch_is_one_job_and_one_smtp_connection(
    api, smtp_sink, welcome_template, settings, django_capture_on_commit_callbacks
):
    """30 recipients are one RQ job (not 30) and go out over a single SMTP session."""
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    recipients = [
        {"to": [f"user{n}@example.com"], "context": {"name": f"User {n}"}} for n in range(30)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/batches/",
            {"template": "welcome", "recipients": recipients},
            format="json",
        )
    assert response.status_code == 202, response.json()
    assert queue_lengths() == {"high": 0, "default": 1, "low": 0}

    run_worker()

    assert len(smtp_sink.messages) == 30
    assert len(smtp_sink.sessions) == 1
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
        f"user{n}@example.com" for n in range(30)
    )
    assert {m.message["Subject"] for m in smtp_sink.messages} == {
        f"Welcome, User {n}!" for n in range(30)
    }
    batch_emails = EmailJob.objects.filter(batch_id=response.json()["id"])
    assert set(batch_emails.values_list("status", flat=True)) == {EmailStatus.SENT}


def test_send_threads_each_keep_their_own_smtp_session(
    api, smtp_sink, welcome_template, settings, django_capture_on_commit_callbacks
):
    """With MAILQUEUE_WORKER_CONCURRENCY=3, 30 emails share at most 3 sessions, one per thread."""
    settings.MAILQUEUE_WORKER_CONCURRENCY = 3
    recipients = [{"to": [f"u{n}@example.com"], "context": {"name": f"U{n}"}} for n in range(30)]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/batches/", {"template": "welcome", "recipients": recipients}, format="json"
        )

    run_worker()

    assert len(smtp_sink.messages) == 30
    assert 1 <= len(smtp_sink.sessions) <= 3
    assert len({m.message["Message-ID"] for m in smtp_sink.messages}) == 30
    assert set(EmailJob.objects.values_list("status", flat=True)) == {EmailStatus.SENT}
    assert DeliveryAttempt.objects.count() == 30


def test_batch_is_drained_in_chunks(
    issued_key, smtp_sink, welcome_template, settings, django_capture_on_commit_callbacks
):
    """With a chunk size of 10, 25 recipients are drained in 3 chunks over one SMTP session."""
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = 10
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    with django_capture_on_commit_callbacks(execute=True):
        batch_create(
            client=issued_key.api_key.client,
            template="welcome",
            recipients=[
                BatchRecipient(to=[f"u{n}@example.com"], context={"name": "x"}, metadata={})
                for n in range(25)
            ],
        )
    assert queue_lengths()["default"] == 1

    run_worker()

    assert len(smtp_sink.messages) == 25
    assert len(smtp_sink.sessions) == 1
    # In the order the batch gave them (ids are time-ordered; one send thread keeps the order).
    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == [f"u{n}@example.com" for n in range(25)]


def test_separate_emails_in_one_worker_run_share_one_connection(
    issued_key, smtp_sink, welcome_template, settings, django_capture_on_commit_callbacks
):
    """Separate emails ask for one drain per priority; the SMTP connection outlives each job."""
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    client = issued_key.api_key.client
    with django_capture_on_commit_callbacks(execute=True):
        for name, priority in (("a", "default"), ("b", "default"), ("c", "high")):
            email_create(
                client=client,
                to=[f"{name}@example.com"],
                template="welcome",
                context={"name": name},
                priority=priority,
            )
    assert queue_lengths() == {"high": 1, "default": 1, "low": 0}

    run_worker()

    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == [
        "c@example.com",
        "a@example.com",
        "b@example.com",
    ]
    assert len(smtp_sink.sessions) == 1


def test_high_priority_email_jumps_ahead_of_500_low_ones(
    issued_key, welcome_template, settings, django_capture_on_commit_callbacks
):
    """An urgent email accepted after a large low-priority batch is delivered first."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = 50
    client = issued_key.api_key.client
    with django_capture_on_commit_callbacks(execute=True):
        batch_create(
            client=client,
            template="welcome",
            priority="low",
            recipients=[
                BatchRecipient(to=[f"bulk{n}@example.com"], context={"name": "x"}, metadata={})
                for n in range(500)
            ],
        )
    with django_capture_on_commit_callbacks(execute=True):
        urgent = email_create(
            client=client,
            to=["urgent@example.com"],
            subject="Password reset",
            text="reset link",
            priority="high",
        )
    assert queue_lengths() == {"high": 1, "default": 0, "low": 1}

    run_worker()

    delivered = list(CapturedMessage.objects.order_by("id").values_list("email_id", flat=True))
    assert len(delivered) == 501
    assert delivered[0] == urgent.pk


def test_high_email_accepted_during_a_long_low_drain_goes_after_the_chunk_in_hand(
    issued_key, welcome_template, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """A drain goes on from chunk to chunk only while no higher-priority job waits."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = 20
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    client = issued_key.api_key.client
    with django_capture_on_commit_callbacks(execute=True):
        batch_create(
            client=client,
            template="welcome",
            priority="low",
            recipients=[
                BatchRecipient(to=[f"bulk{n}@example.com"], context={"name": "x"}, metadata={})
                for n in range(200)
            ],
        )
    urgent = []
    claim = delivery.emails_claim_queued

    def claim_then_accept_an_urgent_email(**kwargs):
        claimed = claim(**kwargs)
        if kwargs["priority"] == "low" and not urgent:
            with django_capture_on_commit_callbacks(execute=True):
                urgent.append(
                    email_create(
                        client=client,
                        to=["urgent@example.com"],
                        subject="Reset",
                        text="x",
                        priority="high",
                    )
                )
        return claimed

    monkeypatch.setattr(delivery, "emails_claim_queued", claim_then_accept_an_urgent_email)
    run_worker()

    delivered = list(CapturedMessage.objects.order_by("id").values_list("email_id", flat=True))
    assert len(delivered) == 201
    assert delivered.index(urgent[0].pk) == 20  # right after the low chunk in hand


def test_job_for_an_unknown_email_finishes_without_error(smtp_sink):
    """A job naming an email that no longer exists does nothing and does not crash."""
    assert deliver_emails(["00000000-0000-0000-0000-000000000000"]) == {
        "claimed": 0,
        "sent": 0,
        "failed": 0,
        "retrying": 0,
        "skipped": 1,
        "rescheduled": 0,
        "lost": 0,
        "crashed": 0,
        "suppressed": 0,
        "held": 0,
        "released": 0,
    }
    deliveries_enqueue(
        [
            DeliveryJob(
                job_id="ghost",
                email_ids=("00000000-0000-0000-0000-000000000000",),
                priority="default",
            )
        ]
    )
    run_worker()
    assert Job.fetch("ghost", connection=redis_connection()).get_status() == "finished"
    assert smtp_sink.messages == []


def test_template_failing_at_render_fails_its_email_and_the_chunk_goes_on(
    issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """A recipient whose data breaks the template is failed; the others in the job are sent."""
    template_create(
        slug="pairs",
        name="Pairs",
        subject="Your items",
        html="<ul>{% for key, value in items %}<li>{{ key }}={{ value }}</li>{% endfor %}</ul>",
        text="items",
        variables=["items"],
    )
    with django_capture_on_commit_callbacks(execute=True):
        batch = batch_create(
            client=issued_key.api_key.client,
            template="pairs",
            recipients=[
                # A string where pairs are expected: the for loop cannot unpack it.
                BatchRecipient(to=["broken@example.com"], context={"items": "oops"}, metadata={}),
                BatchRecipient(
                    to=["fine@example.com"], context={"items": [["a", "1"]]}, metadata={}
                ),
            ],
        )
    assert queue_lengths()["default"] == 1

    run_worker()

    broken = EmailJob.objects.get(batch=batch, recipient="broken@example.com")
    fine = EmailJob.objects.get(batch=batch, recipient="fine@example.com")
    assert broken.status == EmailStatus.FAILED
    assert broken.last_error.startswith("html: ")
    assert "unpack" in broken.last_error
    assert broken.attempts == 1
    assert broken.delivery_attempts.get().error_class == "render"
    assert [e.event_type for e in broken.events.all()] == [EventType.FAILED]
    assert fine.status == EmailStatus.SENT
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["fine@example.com"]]
    assert "<li>a=1</li>" in fine.html


def test_template_with_a_syntax_error_stored_behind_validation_fails_the_email(
    issued_key, smtp_sink, welcome_template, django_capture_on_commit_callbacks
):
    """A template source that no longer compiles fails the email, naming the broken part."""
    with django_capture_on_commit_callbacks(execute=True):
        email = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            template="welcome",
            context={"name": "Ada"},
        )
    # The email renders the version pinned when it was accepted: break that one.
    EmailTemplateVersion.objects.filter(pk=email.template_version_id).update(text="Hello {% if %}")

    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.last_error.startswith("text: ")
    assert smtp_sink.messages == []


def test_smtp_server_dropping_the_idle_connection_costs_no_retry(
    issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """When the server closes the kept-open connection between two emails, the provider
    reconnects and the second email still goes out on its first attempt."""
    client = issued_key.api_key.client
    with django_capture_on_commit_callbacks(execute=True):
        first, second = (
            email_create(client=client, to=[f"{name}@example.com"], subject="Hi", text="x")
            for name in ("first", "second")
        )
    assert deliver_emails([str(first.pk)])["sent"] == 1
    # Restart the server on the same port: the worker's open session is now dead.
    smtp_sink.stop()
    smtp_sink.controller = Controller(smtp_sink, hostname=smtp_sink.host, port=smtp_sink.port)
    smtp_sink.start()

    assert deliver_emails([str(second.pk)])["sent"] == 1

    second.refresh_from_db()
    assert second.status == EmailStatus.SENT
    assert second.attempts == 1
    assert [m.rcpt_tos for m in smtp_sink.messages] == [
        ["first@example.com"],
        ["second@example.com"],
    ]
    assert len(smtp_sink.sessions) == 2


def test_test_send_goes_through_the_queue_at_high_priority(
    admin_user, welcome_template, smtp_sink, django_capture_on_commit_callbacks
):
    """A test send from the admin is a normal job: high priority, sample context, who sent it."""
    with django_capture_on_commit_callbacks(execute=True):
        email = template_send_test(template=welcome_template, to="qa@example.com", user=admin_user)

    assert email.priority == "high"
    assert queue_lengths()["high"] == 1
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.created_by_user == admin_user
    [received] = smtp_sink.messages
    assert received.message["Subject"] == "Welcome, Ada!"


def test_released_capture_is_sent_through_the_real_provider(
    settings, issued_key, welcome_template, smtp_sink, django_capture_on_commit_callbacks
):
    """A message caught by `capture` is released: a new email goes out over SMTP, same content."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = ["smtp"]
    with django_capture_on_commit_callbacks(execute=True):
        original = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            template="welcome",
            context={"name": "Ada"},
        )
    run_worker()
    captured = CapturedMessage.objects.get(email=original)
    assert smtp_sink.messages == []

    with django_capture_on_commit_callbacks(execute=True):
        released = captured_message_release(captured=captured)
    run_worker()

    released.refresh_from_db()
    assert released.status == EmailStatus.SENT
    assert released.provider == "smtp"
    [received] = smtp_sink.messages
    assert received.message["Subject"] == "Welcome, Ada!"
    captured.refresh_from_db()
    assert captured.released_as == released


def test_release_without_a_real_provider_is_refused(issued_key, welcome_template, settings):
    """With only capture configured there is nowhere to release to: a clear error."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = []
    captured = CapturedMessage.objects.create(message_id="x@y", from_email="a@b.c", mime="x")

    with pytest.raises(ValidationFailed, match="No real provider"):
        captured_message_release(captured=captured)


def test_captured_message_is_released_only_once(
    settings, issued_key, welcome_template, django_capture_on_commit_callbacks
):
    """A second release of the same capture (a double click) is refused, nothing sent twice."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = ["console"]
    with django_capture_on_commit_callbacks(execute=True):
        original = email_create(
            client=issued_key.api_key.client, to=["ada@example.com"], subject="Hi", text="x"
        )
    run_worker()
    captured = CapturedMessage.objects.get(email=original)
    captured_message_release(captured=captured)

    with pytest.raises(InvalidTransition, match="already released"):
        captured_message_release(captured=captured)

    assert EmailJob.objects.filter(metadata__released_from=str(original.pk)).count() == 1
