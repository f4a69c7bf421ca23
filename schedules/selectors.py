"""Reads of schedules and their runs."""

from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from mailqueue.models import Client
from schedules.cron import cron_next
from schedules.models import Schedule, ScheduleRun


def schedule_list(*, client: Client) -> QuerySet[Schedule]:
    """A client's schedules, newest first (a topic's frequency schedules are not listed)."""
    return (
        Schedule.objects.filter(client=client, frequency="")
        .select_related("topic")
        .order_by("-created_at", "-id")
    )


def schedule_get(*, client: Client, schedule_id: UUID | str) -> Schedule:
    """One of the client's schedules, or 404 (another client's schedule is not there)."""
    schedule = schedule_list(client=client).filter(pk=schedule_id).first()
    if schedule is None:
        raise Http404("No such schedule.")
    return schedule


def schedule_shown_id(*, schedule_id: UUID | str | None) -> UUID | None:
    """The id of a schedule the API shows (not a topic's frequency schedule), else None."""
    if schedule_id is None:
        return None
    shown = Schedule.objects.filter(pk=schedule_id, frequency="").values_list("pk", flat=True)
    return shown.first()


def schedule_next_runs(
    *, schedule: Schedule, count: int = 5, after: datetime | None = None
) -> list[dict[str, Any]]:
    """The next `count` ticks, each in the schedule's time zone (`local`) and in UTC."""
    zone = ZoneInfo(schedule.timezone)
    ticks = cron_next(schedule.cron, schedule.timezone, after or timezone.now(), count)
    return [{"local": tick.astimezone(zone), "utc": tick} for tick in ticks]


def schedule_last_run(*, schedule: Schedule) -> ScheduleRun | None:
    """The schedule's latest run (by tick), with its batch."""
    return ScheduleRun.objects.filter(schedule=schedule).select_related("batch").first()


def schedule_runs(*, schedule: Schedule, limit: int = 20) -> list[ScheduleRun]:
    """The schedule's latest runs, newest tick first, with their batches."""
    return list(ScheduleRun.objects.filter(schedule=schedule).select_related("batch")[:limit])
