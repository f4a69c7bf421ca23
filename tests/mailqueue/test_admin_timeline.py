"""The per-email timeline: one ordered list of what happened, and the message as it went out."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.selectors.timeline import email_timeline
from mailqueue.services import api_key_create, email_cancel, email_create, emails_deliver
from templates_app.services import template_create
from tracking.services import NewEvent, events_record

pytestmark = pytest.mark.django_db


def timeline_titles(page: str) -> list[str]:
    """The entry titles of a timeline page, top to bottom."""
    timeline = page.split('id="email-timeline"')[1].split("</ol>")[0]
    return re.findall(r'<span class="timeline-title">([^<]*)</span>', timeline)


def timeline_details(page: str) -> list[str]:
    """The entry details of a timeline page, top to bottom."""
    timeline = page.split('id="email-timeline"')[1].split("</ol>")[0]
    return re.findall(r'<p class="timeline-detail">([^<]*)</p>', timeline)


def test_timeline_lists_creation_attempts_and_events_in_order(admin_client, smtp_sink):
    """An API email refused once (451), sent on its second attempt, then delivered and opened."""
    issued = api_key_create(client_name="shop", scopes=["send"])
    template = template_create(
        slug="receipt",
        name="Receipt",
        subject="Receipt for {{ name }}",
        html="<p>Thanks <b>{{ name }}</b></p>",
        text="Thanks {{ name }}",
        variables=["name"],
        sample_context={"name": "Ada"},
    )
    email = email_create(
        client=issued.api_key.client,
        api_key=issued.api_key,
        to=["ada@example.com"],
        template="receipt",
        context={"name": "Ada"},
    )
    smtp_sink.rcpt_replies["ada@example.com"] = "451 4.3.0 Mailbox busy, try later"
    assert emails_deliver(email_ids=[str(email.pk)]).retrying == 1
    # The cause goes away and the retry comes due.
    del smtp_sink.rcpt_replies["ada@example.com"]
    EmailJob.objects.filter(pk=email.pk).update(next_attempt_at=timezone.now())
    assert emails_deliver(email_ids=[str(email.pk)]).sent == 1
    later = timezone.now() + timedelta(seconds=5)
    events_record(
        events=[
            NewEvent(email_id=email.pk, event_type="delivered", provider="smtp", occurred_at=later),
            NewEvent(
                email_id=email.pk,
                event_type="opened",
                recipient="ada@example.com",
                occurred_at=later + timedelta(minutes=3),
            ),
        ]
    )

    detail = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))
    timeline_url = reverse("admin:mailqueue_emailjob_timeline", args=[email.pk])
    assert f'id="email-timeline-link" class="mq-timeline-link" href="{timeline_url}"' in (
        detail.content.decode()
    )

    response = admin_client.get(timeline_url)
    assert response.status_code == 200
    page = response.content.decode()
    titles = timeline_titles(page)
    assert titles == [
        "Created",
        "Queued",
        "Attempt #1 via smtp: transient error",
        "Deferred (smtp)",
        "Attempt #2 via smtp: sent",
        "Sent (smtp)",
        "Delivered (smtp)",
        "Opened",
    ]
    details = timeline_details(page)
    assert details[0] == f"by API key mq_{issued.api_key.prefix}_… (client shop)"
    assert re.fullmatch(
        r"\d+ ms · smtplib\.SMTPRecipientsRefused: Recipients refused: "
        r".*451 4\.3\.0 Mailbox busy.*",
        details[2].replace("&#x27;", "'"),
    )
    assert "recipient ada@example.com" in details[-1]
    # The message exactly as sent, and the template version it was rendered with.
    assert "Receipt for Ada" in page
    assert "Thanks Ada</pre>" in page
    assert '<iframe sandbox=""' in page
    assert 'srcdoc="&lt;p&gt;Thanks &lt;b&gt;Ada&lt;/b&gt;&lt;/p&gt;"' in page
    version_cell = page.split('id="timeline-template-version">')[1].split("</td>")[0]
    assert ">receipt v1</a>" in version_cell
    assert (
        reverse("admin:templates_app_emailtemplate_change", args=[template.pk]) in version_cell
        or "emailtemplateversion" in version_cell
    )


def test_timeline_of_a_scheduled_email_cancelled_by_an_admin(admin_client, admin_user):
    """Made by an admin user, scheduled for tomorrow, cancelled: never queued."""
    from mailqueue.services.emails import admin_sender_client

    send_at = timezone.now() + timedelta(days=1)
    email = email_create(
        client=admin_sender_client(),
        to=["bo@example.com"],
        subject="Later",
        text="Tomorrow",
        send_at=send_at,
        created_by_user=admin_user,
    )
    email_cancel(email=email)

    page = admin_client.get(reverse("admin:mailqueue_emailjob_timeline", args=[email.pk]))
    titles = timeline_titles(page.content.decode())
    assert titles[0] == "Created"
    assert titles[1].startswith(f"Scheduled for {send_at:%Y-%m-%d %H:%M:%S}")
    assert titles[2:] == ["Cancelled"]
    assert timeline_details(page.content.decode())[0] == (
        f"by admin user {admin_user.get_username()} (client mailqueue-admin)"
    )
    assert "The message (not sent)" in page.content.decode()


def test_timeline_shows_how_an_email_ended_even_without_its_event(admin_client):
    """A failed row with no recorded event still ends the timeline with its error."""
    from mailqueue.models import Client

    client = Client.objects.create(name="legacy")
    email = EmailJob.objects.create(
        client=client,
        to=["x@example.com"],
        recipient="x@example.com",
        status=EmailStatus.FAILED,
        subject="Old",
        text="Old",
        last_error="550 mailbox unavailable",
    )
    entries = email_timeline(email=email)
    assert [entry.kind for entry in entries] == ["created", "queued", "failed"]
    assert entries[-1].detail == "550 mailbox unavailable"
    assert entries[-1].tone == "error"


def test_timeline_is_404_for_unknown_or_malformed_ids_and_needs_view_permission(
    admin_client, client
):
    """Unknown ids are 404; staff without the view permission are refused."""
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(f"/admin/mailqueue/emailjob/{missing}/timeline/").status_code == 404
    assert admin_client.get("/admin/mailqueue/emailjob/nope/timeline/").status_code == 404

    from mailqueue.models import Client

    email = EmailJob.objects.create(
        client=Client.objects.create(name="c"),
        to=["y@example.com"],
        recipient="y@example.com",
        status=EmailStatus.QUEUED,
    )
    get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    url = reverse("admin:mailqueue_emailjob_timeline", args=[email.pk])
    assert client.get(url).status_code == 403
