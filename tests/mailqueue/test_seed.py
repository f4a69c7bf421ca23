"""`manage.py seed_emails`: consistent email history, nothing enqueued, listed by the admin."""

import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import Batch, Client, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services.dead_letters import error_group_key
from mailqueue.validation import address_spec
from templates_app.models import EmailTemplate
from tests.helpers import queue_lengths
from tracking.models import EventType, TrackingEvent

pytestmark = pytest.mark.django_db

TERMINAL = {EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELLED}
WAITING = {EmailStatus.QUEUED, EmailStatus.RETRYING, EmailStatus.SCHEDULED}


def seed(*args: str) -> str:
    """Run seed_emails and return its stdout."""
    out = StringIO()
    call_command("seed_emails", *args, stdout=out)
    return out.getvalue()


def test_seeded_emails_are_consistent_history():
    """500 emails: recipients match their `to`, failures are grouped, sent/failed have events."""
    output = seed("--count", "500", "--batch-size", "120", "--random-seed", "7")

    emails = list(EmailJob.objects.select_related("template", "template_version"))
    assert len(emails) == 500
    assert "rows/s" in output
    assert "Seeded 500 emails" in output
    assert {email.status for email in emails} == TERMINAL
    oldest_allowed = timezone.now() - timedelta(days=91)
    for email in emails:
        assert email.recipient == email.to_addresses[0] == address_spec(email.to[0])
        assert email.to_addresses == [address_spec(address) for address in email.to]
        assert "seed" in email.tags
        assert oldest_allowed < email.created_at <= email.updated_at
        assert email.client.name == "seed"
        if email.template_id:
            assert email.template_version.template_id == email.template_id

    failed = [email for email in emails if email.status == EmailStatus.FAILED]
    assert failed
    for email in failed:
        assert email.last_error and email.error_class
        assert email.error_group == error_group_key(
            error_class=email.error_class, message=email.last_error
        )
    # Many addresses, a handful of causes: the dead-letter view has groups to show.
    assert 1 < len({email.error_group for email in failed}) < len(failed)

    sent = [email for email in emails if email.status == EmailStatus.SENT]
    assert all(email.sent_at and email.subject and email.provider for email in sent)
    events = set(TrackingEvent.objects.values_list("email_id", "event_type"))
    assert events == {(email.pk, EventType.SENT) for email in sent} | {
        (email.pk, EventType.FAILED) for email in failed
    }
    # Seeded templates were created through the service, so each has its first version.
    assert sorted(EmailTemplate.objects.values_list("slug", "version")) == [
        ("seed-order-confirmation", 1),
        ("seed-password-reset", 1),
        ("seed-welcome", 1),
    ]
    assert any(email.template_id for email in emails)
    assert any(not email.template_id for email in emails)


def test_seeding_enqueues_nothing():
    """Not one job, scheduled job or key lands in Redis, even with waiting emails."""
    seed("--count", "2000", "--batch-size", "500", "--with-waiting", "--random-seed", "3")

    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    assert redis_connection().dbsize() == 0
    waiting = EmailJob.objects.filter(status__in=WAITING)
    # A small share only: a running sweeper would enqueue these.
    assert 0 < waiting.count() < 2000 * 0.05
    assert all("seed" in tags for tags in waiting.values_list("tags", flat=True))
    assert not waiting.filter(status=EmailStatus.SCHEDULED, send_at__lte=timezone.now()).exists()


def test_without_the_benchmarks_the_command_says_why_and_writes_nothing(monkeypatch):
    """Where bench/ is not installed (the Docker image), seed_emails fails with a clear message."""
    # None in sys.modules makes the import fail as if the module were absent.
    monkeypatch.setitem(sys.modules, "bench.lib.seeding", None)

    with pytest.raises(CommandError, match=r"bench/lib/seeding\.py.*checkout"):
        seed("--count", "10")
    assert not EmailJob.objects.exists()


def test_without_waiting_flag_every_email_is_finished():
    """By default the sweeper finds nothing to do among the seeded emails."""
    seed("--count", "1500", "--random-seed", "5")

    assert not EmailJob.objects.filter(status__in=WAITING | {EmailStatus.SENDING}).exists()


def test_existing_templates_and_client_are_used(welcome_template):
    """With templates present none are added; --client names the owner; batches add up."""
    seed("--count", "3000", "--client", "billing", "--random-seed", "11")

    assert list(EmailTemplate.objects.values_list("slug", flat=True)) == ["welcome"]
    assert set(EmailJob.objects.exclude(template=None).values_list("template_id", flat=True)) == {
        welcome_template.pk
    }
    assert set(Client.objects.values_list("name", flat=True)) == {"billing"}
    for batch in Batch.objects.all():
        assert batch.emails.count() == batch.count
        assert set(batch.emails.values_list("template_id", flat=True)) == {batch.template_id}


def test_admin_changelist_lists_seeded_emails(admin_client):
    """The email list, its status filter and its address search show the seeded rows."""
    seed("--count", "500", "--random-seed", "9")
    changelist = reverse("admin:mailqueue_emailjob_changelist")
    newest = EmailJob.objects.order_by("-created_at", "-id").first()
    failed = EmailJob.objects.filter(status=EmailStatus.FAILED).order_by("-created_at").first()

    page = admin_client.get(changelist)
    assert page.status_code == 200
    assert newest.recipient in page.content.decode()

    failed_page = admin_client.get(changelist, {"status__exact": "failed"})
    assert failed_page.status_code == 200
    shown = list(failed_page.context["cl"].result_list)
    assert shown[0] == failed
    assert {email.status for email in shown} == {EmailStatus.FAILED}

    found = admin_client.get(changelist, {"q": newest.recipient})
    assert newest in list(found.context["cl"].result_list)

    events = admin_client.get(reverse("admin:tracking_trackingevent_changelist"))
    assert events.status_code == 200
