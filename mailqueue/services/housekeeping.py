"""The daily housekeeping: the scheduler runs it once a day (see mailqueue/scheduler.py) and
`manage.py mailqueue_purge` on demand.

It always trims the tables that would otherwise grow forever, one-time codes (older than
MAILQUEUE_OTP_KEEP_HOURS) and handled-event records (older than
MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS), and applies the retention purge, which does something only
when its options are set. Every delete goes in bounded batches, one transaction each.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from event_sends.services import events_handled_purge
from mailqueue.services.retention import PurgeResult, retention_purge
from otp.services import codes_purge

logger = logging.getLogger(__name__)


@dataclass
class HousekeepingResult:
    """What one housekeeping run did (or, in a dry run, would do)."""

    retention: PurgeResult = field(default_factory=PurgeResult)
    codes_deleted: int = 0
    handled_events_deleted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.retention} codes_deleted={self.codes_deleted} "
            f"handled_events_deleted={self.handled_events_deleted}"
        )


def housekeeping_run(*, dry_run: bool = False, now: datetime | None = None) -> HousekeepingResult:
    """Purge old one-time codes and handled-event records, and apply the retention options."""
    now = now or timezone.now()
    # Retention first: a wrong retention option fails the run before anything is deleted.
    result = HousekeepingResult(
        retention=retention_purge(now=now, dry_run=dry_run),
        codes_deleted=codes_purge(now=now, dry_run=dry_run),
        handled_events_deleted=events_handled_purge(now=now, dry_run=dry_run),
    )
    logger.info("housekeeping%s: %s", " (dry run)" if dry_run else "", result)
    return result
