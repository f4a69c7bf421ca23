"""The daily housekeeping (the scheduler's daily run and `manage.py mailqueue_purge`): old
one-time codes and handled-event records go even when no retention option is set."""

from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from event_sends.models import EventRule, HandledEvent
from mailqueue.models import Client
from mailqueue.scheduler import RETENTION_KEY
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from otp.models import OneTimeCode


@pytest.fixture
def acme(db) -> Client:
    """The client the codes and handled events belong to."""
    return Client.objects.create(name="acme")


@pytest.fixture
def old_and_recent(acme) -> dict[str, list]:
    """Per table, the ids of rows just past their keep time and of rows just within it."""
    now = timezone.now()
    rule = EventRule.objects.create(
        client=acme, event_type="user.registered", template="welcome", recipient_path="email"
    )

    def code(created_at: datetime) -> OneTimeCode:
        return OneTimeCode.objects.create(
            client=acme, address="ada@example.com", purpose="login", code_hash="f" * 64,
            created_at=created_at, expires_at=created_at + timedelta(minutes=10),
        )  # fmt: skip

    def handled(event_id: str, handled_at: datetime) -> HandledEvent:
        return HandledEvent.objects.create(
            client=acme, event_id=event_id, rule=rule, event_type=rule.event_type,
            handled_at=handled_at,
        )  # fmt: skip

    # Defaults: MAILQUEUE_OTP_KEEP_HOURS=24, MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS=30.
    return {
        "old_codes": [code(now - timedelta(hours=25)).pk, code(now - timedelta(days=3)).pk],
        "recent_codes": [code(now - timedelta(hours=23)).pk],
        "old_handled": [
            handled("evt-old", now - timedelta(days=31)).pk,
            handled("evt-older", now - timedelta(days=400)).pk,
        ],
        "recent_handled": [handled("evt-recent", now - timedelta(days=29)).pk],
    }


def _left() -> tuple[set, set]:
    return (
        set(OneTimeCode.objects.values_list("pk", flat=True)),
        set(HandledEvent.objects.values_list("pk", flat=True)),
    )


def run(*args: str) -> str:
    """Run a management command and return its stdout."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_one_daily_run_purges_old_codes_and_handled_events_without_retention(old_and_recent):
    """With no retention option set, the scheduler's daily run still deletes codes older than
    MAILQUEUE_OTP_KEEP_HOURS and handled events older than MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS,
    and keeps the recent ones; a second scheduler the same day starts no second run."""
    scheduler = get_scheduler()
    scheduler.run(burst=True)
    scheduler.purge_thread.join(timeout=30)

    assert _left() == (set(old_and_recent["recent_codes"]), set(old_and_recent["recent_handled"]))
    assert redis_connection().ttl(RETENTION_KEY) > 23 * 3600
    second = get_scheduler()
    second.run(burst=True)
    assert not hasattr(second, "purge_thread")


def test_mailqueue_purge_does_the_housekeeping_and_prints_its_counts(old_and_recent):
    """The command counts in a dry run and changes nothing, then deletes exactly the old rows."""
    everything = _left()

    assert "codes_deleted=2 handled_events_deleted=2" in run("mailqueue_purge", "--dry-run")
    assert _left() == everything

    output = run("mailqueue_purge")

    assert "codes_deleted=2 handled_events_deleted=2" in output
    assert "emails_deleted=0" in output  # retention itself stays off
    assert _left() == (set(old_and_recent["recent_codes"]), set(old_and_recent["recent_handled"]))
    assert "codes_deleted=0 handled_events_deleted=0" in run("mailqueue_purge")


def test_handled_events_keep_days_is_a_setting_in_bounded_batches(old_and_recent, settings):
    """MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS moves the cut-off (here: the 29-day-old record goes
    too), the purge deletes in batches of MAILQUEUE_RETENTION_BATCH_SIZE, and 0 days is refused
    by name."""
    settings.MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS = 7
    settings.MAILQUEUE_RETENTION_BATCH_SIZE = 1

    assert "handled_events_deleted=3" in run("mailqueue_purge")
    assert not HandledEvent.objects.exists()

    settings.MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS = 0
    with pytest.raises(Exception, match="MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS"):
        run("mailqueue_purge")
