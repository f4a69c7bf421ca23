"""Retention (mailqueue_purge, the scheduler's daily run) and per-address export and erasure."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import (
    CapturedMessage,
    Client,
    DeliveryAttempt,
    EmailAttachment,
    EmailJob,
    EmailStatus,
    IdempotencyRecord,
    Suppression,
    SuppressionReason,
)
from mailqueue.scheduler import RETENTION_KEY
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from mailqueue.selectors.suppressions import address_hash
from otp.models import OneTimeCode
from topics.models import Subscriber, Topic
from tracking.models import TrackedLink, TrackingEvent

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run(*args) -> str:
    """Run a management command and return its stdout."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def acme(db) -> Client:
    """The client the stored emails belong to."""
    return Client.objects.create(name="acme")


@pytest.fixture
def email_row(acme):
    """Factory: a stored email `days` old with content, an attempt, an event and an attachment."""

    def make(
        *, days: int, status: str = EmailStatus.SENT, to: str = "ada@example.com", **fields
    ) -> EmailJob:
        email = EmailJob.objects.create(
            client=acme,
            status=status,
            to=[to],
            to_addresses=[to.lower()],
            recipient=to.lower(),
            subject="Your order",
            html="<p>secret</p>",
            text="secret",
            context={"name": "Ada"},
            **fields,
        )
        EmailJob.objects.filter(pk=email.pk).update(
            created_at=timezone.now() - timedelta(days=days)
        )
        now = timezone.now()
        DeliveryAttempt.objects.create(
            email=email, number=1, provider="capture", outcome="sent", started_at=now
        )
        TrackingEvent.objects.create(email=email, event_type="sent", occurred_at=now)
        EmailAttachment.objects.create(
            email=email, filename="a.txt", mimetype="text/plain", content=b"x"
        )
        return email

    return make


# --- Retention ---------------------------------------------------------------------------------


def test_purge_does_nothing_when_retention_is_off(email_row):
    """Both options are off by default: a purge keeps everything."""
    email = email_row(days=400)

    assert "emails_deleted=0" in run("mailqueue_purge")
    email.refresh_from_db()
    assert email.html == "<p>secret</p>"
    assert email.attachments.count() == 1


def test_content_retention_drops_bodies_of_old_finished_emails_only(email_row, settings):
    """Old finished emails lose html, text, context and attachments but keep subject, recipients,
    attempts and events; recent and unfinished emails are untouched."""
    settings.MAILQUEUE_RETENTION_CONTENT_DAYS = 30
    old = [email_row(days=40, status=status) for status in ("sent", "failed", "cancelled")]
    old.append(email_row(days=40, status=EmailStatus.SUPPRESSED))
    recent = email_row(days=5)
    waiting = email_row(days=40, status=EmailStatus.RETRYING)

    assert "contents_dropped=4 attachments_deleted=4" in run("mailqueue_purge", "--dry-run")
    assert EmailAttachment.objects.count() == 6

    output = run("mailqueue_purge")

    assert "contents_dropped=4 attachments_deleted=4" in output
    for email in old:
        email.refresh_from_db()
        assert (email.html, email.text, email.context) == ("", "", {})
        assert email.subject == "Your order"
        assert email.recipient == "ada@example.com"
        assert email.delivery_attempts.count() == 1
        assert email.events.count() == 1
        assert email.attachments.count() == 0
    for email in (recent, waiting):
        email.refresh_from_db()
        assert email.html == "<p>secret</p>"
        assert email.attachments.count() == 1
    assert "contents_dropped=0" in run("mailqueue_purge")


def test_full_retention_deletes_old_finished_emails_with_their_rows(email_row, acme, settings):
    """Emails past MAILQUEUE_RETENTION_DAYS go with attempts, events and attachments; old
    captured messages and expired idempotency records go too; the rest stays."""
    settings.MAILQUEUE_RETENTION_DAYS = 90
    old = email_row(days=100)
    kept = [email_row(days=10), email_row(days=100, status=EmailStatus.SCHEDULED)]
    capture = CapturedMessage.objects.create(message_id="<m>", from_email="a@x", mime="M")
    CapturedMessage.objects.filter(pk=capture.pk).update(
        created_at=timezone.now() - timedelta(days=100)
    )
    fresh_capture = CapturedMessage.objects.create(message_id="<n>", from_email="a@x", mime="M")
    IdempotencyRecord.objects.create(
        client=acme, key="old", request_hash="h", created_at=timezone.now() - timedelta(days=2)
    )
    IdempotencyRecord.objects.create(
        client=acme, key="new", request_hash="h", created_at=timezone.now()
    )

    assert "emails_deleted=1" in run("mailqueue_purge", "--dry-run")
    assert EmailJob.objects.filter(pk=old.pk).exists()

    output = run("mailqueue_purge")

    assert "emails_deleted=1 captured_messages_deleted=1 idempotency_records_deleted=1" in output
    assert set(EmailJob.objects.values_list("pk", flat=True)) == {email.pk for email in kept}
    assert not DeliveryAttempt.objects.filter(email_id=old.pk).exists()
    assert not TrackingEvent.objects.filter(email_id=old.pk).exists()
    assert list(CapturedMessage.objects.values_list("pk", flat=True)) == [fresh_capture.pk]
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_full_retention_keeps_emails_with_tracked_links_for_60_days(email_row, settings):
    """With MAILQUEUE_RETENTION_DAYS below 60, an email with tracked links stays until it is 60
    days old, so its links keep redirecting; one without links goes at the configured age."""
    settings.MAILQUEUE_RETENTION_DAYS = 7
    tracked = email_row(days=30)
    TrackedLink.objects.create(email=tracked, position=0, url="https://example.com/")
    untracked = email_row(days=30)
    expired = email_row(days=61)
    TrackedLink.objects.create(email=expired, position=0, url="https://example.com/")

    run("mailqueue_purge")

    assert list(EmailJob.objects.values_list("pk", flat=True)) == [tracked.pk]
    assert TrackedLink.objects.get().email_id == tracked.pk
    assert not EmailJob.objects.filter(pk__in=[untracked.pk, expired.pk]).exists()


def test_purge_works_in_bounded_batches(email_row, settings):
    """Each statement touches at most MAILQUEUE_RETENTION_BATCH_SIZE emails, each batch in its
    own transaction, and the purge still finishes the whole backlog."""
    settings.MAILQUEUE_RETENTION_DAYS = 90
    settings.MAILQUEUE_RETENTION_BATCH_SIZE = 2
    for _ in range(5):
        email_row(days=100)

    with CaptureQueriesContext(connection) as queries:
        output = run("mailqueue_purge")

    assert "emails_deleted=5" in output
    assert not EmailJob.objects.exists()
    email_deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "email_jobs"')]
    assert len(email_deletes) == 3  # 2 + 2 + 1
    assert all(len(UUID.findall(sql)) <= 2 for sql in email_deletes)
    savepoints = [q["sql"] for q in queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) >= 3


def test_retention_setting_refuses_negative_days(settings):
    """A negative number of days is a configuration error naming the setting."""
    settings.MAILQUEUE_RETENTION_DAYS = -3
    with pytest.raises(Exception, match="MAILQUEUE_RETENTION_DAYS"):
        run("mailqueue_purge")


@pytest.mark.django_db(transaction=True)
def test_scheduler_purges_once_a_day_across_schedulers(email_row, settings):
    """The scheduler's loop starts the purge when retention is on; a second scheduler (or a
    second pass) the same day does not start another."""
    settings.MAILQUEUE_RETENTION_DAYS = 90
    email_row(days=100)

    first = get_scheduler()
    first.run(burst=True)
    first.purge_thread.join(timeout=30)

    assert not EmailJob.objects.exists()
    assert redis_connection().ttl(RETENTION_KEY) > 23 * 3600
    email_row(days=100)
    second = get_scheduler()
    second.run(burst=True)
    assert not hasattr(second, "purge_thread")
    assert EmailJob.objects.count() == 1


# --- Export and erasure ------------------------------------------------------------------------


def test_export_prints_everything_about_an_address_across_clients(email_row, acme):
    """Emails where the address is to, cc or bcc (any client, any case), with content,
    attempts and events, plus captured messages and suppressions, as JSON."""
    other = Client.objects.create(name="other")
    as_to = email_row(days=1, to="Ada@Example.com")
    as_cc = email_row(days=1, to="bob@example.com", cc=["Ada <ada@example.com>"])
    as_bcc = EmailJob.objects.create(
        client=other, status="sent", to=["c@example.com"], to_addresses=["c@example.com"],
        recipient="c@example.com", bcc=["ADA@example.com"],
    )  # fmt: skip
    email_row(days=1, to="bob@example.com", cc=["ada@example.community"])
    CapturedMessage.objects.create(
        message_id="<m>", from_email="a@x", to=["ada@example.com"], mime="MIME"
    )
    Suppression.objects.create(address="ada@example.com", reason=SuppressionReason.HARD_BOUNCE)

    data = json.loads(run("mailqueue_export", "ADA@example.com"))

    assert data["address"] == "ada@example.com"
    assert {e["id"] for e in data["emails"]} == {str(as_to.pk), str(as_cc.pk), str(as_bcc.pk)}
    first = next(e for e in data["emails"] if e["id"] == str(as_to.pk))
    assert first["html"] == "<p>secret</p>"
    assert first["context"] == {"name": "Ada"}
    assert [a["provider"] for a in first["attempts"]] == ["capture"]
    assert [e["event_type"] for e in first["events"]] == ["sent"]
    assert first["attachments"] == [{"filename": "a.txt", "mimetype": "text/plain"}]
    assert [m["mime"] for m in data["captured_messages"]] == ["MIME"]
    assert [s["reason"] for s in data["suppressions"]] == ["hard_bounce"]


def test_export_refuses_something_that_is_not_an_address(db):
    """A typo is an error, not an empty export."""
    with pytest.raises(CommandError, match="email address"):
        run("mailqueue_export", "not an address")


def test_erase_deletes_the_address_data_and_keeps_it_suppressed(
    email_row, acme, issued_key, send, work, settings
):
    """Erasure deletes the address's emails (with attempts and events), its unlinked events and
    captured messages, keeps other people's data, and stores its suppressions hashed: a new
    email to the address is still suppressed."""
    settings.EMAIL_PROVIDERS = ["capture"]
    mine = email_row(days=1, to="ada@example.com")
    bcc = email_row(days=1, to="bob@example.com", bcc=["ada@example.com"])
    someone_else = email_row(days=1, to="bob@example.com")
    TrackingEvent.objects.create(
        event_type="bounced", occurred_at=timezone.now(), recipient="ada@example.com"
    )
    CapturedMessage.objects.create(message_id="<m>", from_email="a@x", to=["ada@example.com"])
    Suppression.objects.create(address="ada@example.com", reason=SuppressionReason.HARD_BOUNCE)

    output = run("mailqueue_erase", "ada@example.com")

    assert "emails_deleted=2 events_deleted=3 captured_messages_deleted=1" in output
    assert not EmailJob.objects.filter(pk__in=[mine.pk, bcc.pk]).exists()
    assert EmailJob.objects.filter(pk=someone_else.pk).exists()
    assert not TrackingEvent.objects.filter(recipient="ada@example.com").exists()
    assert not CapturedMessage.objects.exists()
    assert list(Suppression.objects.values_list("address", flat=True)) == [
        address_hash("ada@example.com")
    ]
    assert json.loads(run("mailqueue_export", "ada@example.com"))["emails"] == []

    again = send(to="Ada <ADA@example.com>")
    work()

    again.refresh_from_db()
    assert again.status == EmailStatus.SUPPRESSED
    assert not CapturedMessage.objects.exists()


def test_admin_action_erases_the_selected_emails_recipients(admin_client, email_row):
    """The email list's action erases each selected email's recipient everywhere."""
    selected = email_row(days=1, to="ada@example.com")
    other_of_ada = email_row(days=1, to="ada@example.com")
    bob = email_row(days=1, to="bob@example.com")

    response = admin_client.post(
        reverse("admin:mailqueue_emailjob_changelist"),
        {"action": "erase_recipients", "_selected_action": [str(selected.pk)]},
        follow=True,
    )

    assert "Erased the data of 1 recipient" in response.content.decode()
    assert list(EmailJob.objects.values_list("pk", flat=True)) == [bob.pk]
    assert not EmailJob.objects.filter(pk=other_of_ada.pk).exists()


def test_export_and_erase_cover_subscriptions_and_one_time_codes(acme):
    """An address's topic subscriptions (any client) and its one-time codes are exported (the
    codes without their hashes) and erased; another address's are kept."""
    other = Client.objects.create(name="other")
    news = Topic.objects.create(client=acme, slug="news", name="News", subject="s", text="t")
    digest = Topic.objects.create(client=other, slug="digest", name="Digest", subject="s", text="t")
    Subscriber.objects.create(
        topic=news, email="ada@example.com", status="active", frequency="@weekly"
    )
    Subscriber.objects.create(topic=digest, email="ada@example.com", status="unsubscribed")
    kept = Subscriber.objects.create(topic=news, email="bob@example.com")
    now = timezone.now()
    for address in ("ada@example.com", "bob@example.com"):
        OneTimeCode.objects.create(
            client=acme, address=address, purpose="login", code_hash="f" * 64,
            created_at=now, expires_at=now + timedelta(minutes=10),
        )  # fmt: skip

    data = json.loads(run("mailqueue_export", "Ada@Example.com"))

    assert sorted((s["client"], s["topic"], s["status"]) for s in data["subscriptions"]) == [
        ("acme", "news", "active"),
        ("other", "digest", "unsubscribed"),
    ]
    assert [c["purpose"] for c in data["one_time_codes"]] == ["login"]
    assert "code_hash" not in data["one_time_codes"][0]
    assert "f" * 64 not in json.dumps(data)

    output = run("mailqueue_erase", "ada@example.com")

    assert "subscribers_deleted=2 codes_deleted=1" in output
    assert list(Subscriber.objects.all()) == [kept]
    assert list(OneTimeCode.objects.values_list("address", flat=True)) == ["bob@example.com"]
