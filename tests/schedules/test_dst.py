"""Recurring sends across daylight-saving changes, through the scheduler's pass
(`schedules_tick`) with a frozen clock: which runs happen, at which UTC instants, and never one
tick twice. The wall-clock rules themselves (gap: its end; overlap: the first occurrence) are in
schedules/cron.py and tests/schedules/test_cron.py."""

from datetime import UTC, datetime, timedelta

import pytest

from schedules.models import Schedule, ScheduleRun
from schedules.services import schedule_create, schedules_tick

pytestmark = pytest.mark.django_db


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _due(schedule: Schedule, at: datetime) -> Schedule:
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=at)
    schedule.refresh_from_db()
    return schedule


def _ticks(schedule: Schedule) -> list[datetime]:
    runs = ScheduleRun.objects.filter(schedule=schedule).order_by("tick")
    return list(runs.values_list("tick", flat=True))


def test_a_daily_2am_paris_run_missed_over_the_spring_forward_night_runs_once_at_the_gap_end(
    news, add_subscribers
):
    """`0 2 * * *` Europe/Paris, run_once. 2027-03-28 02:00 does not exist (02:00 CET becomes
    03:00 CEST = 01:00Z): the tick is at the end of the gap. The scheduler runs Saturday's tick,
    is down over the night, and comes back at 04:00 CEST (02:00Z): exactly one run, for the gap
    tick 01:00Z, and the next run is Monday 02:00 CEST (00:00Z)."""
    add_subscribers(news, 1)
    schedule = schedule_create(client=news.client, topic="news", cron="0 2 * * *",
                               timezone="Europe/Paris", missed="run_once")  # fmt: skip
    _due(schedule, utc(2027, 3, 27, 1))  # Saturday 02:00 CET
    assert [run.tick for run in schedules_tick(now=utc(2027, 3, 27, 1, 0, 1))] == [
        utc(2027, 3, 27, 1)
    ]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2027, 3, 28, 1)  # the gap's end, 03:00 CEST

    made = schedules_tick(now=utc(2027, 3, 28, 2))  # back at 04:00 CEST
    again = schedules_tick(now=utc(2027, 3, 28, 2, 0, 30))

    assert [(run.schedule_id, run.tick) for run in made] == [(schedule.pk, utc(2027, 3, 28, 1))]
    assert again == []
    assert _ticks(schedule) == [utc(2027, 3, 27, 1), utc(2027, 3, 28, 1)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2027, 3, 29, 0)


def test_an_hourly_paris_schedule_runs_the_repeated_fall_back_hour_once(news, add_subscribers):
    """`0 * * * *` Europe/Paris through the 2026-10-25 fall-back night, one pass every 10
    minutes. Local 02:00 happens twice (00:00Z in CEST, 01:00Z in CET): it runs once, at its
    first occurrence, so the UTC runs are 22:00, 23:00, 00:00, then 02:00 (03:00 CET) and 03:00
    (04:00 CET): no run at 01:00Z, a two-hour gap in UTC, and no tick runs twice."""
    add_subscribers(news, 1)
    schedule = schedule_create(client=news.client, topic="news", cron="0 * * * *",
                               timezone="Europe/Paris")  # fmt: skip
    _due(schedule, utc(2026, 10, 24, 22))  # 00:00 CEST
    made = []
    now = utc(2026, 10, 24, 21, 50, 1)
    while now < utc(2026, 10, 25, 3, 30):
        runs = schedules_tick(now=now)
        assert len(runs) <= 1, f"two runs in one pass at {now}"
        made += [run.tick for run in runs]
        now += timedelta(minutes=10)

    expected = [
        utc(2026, 10, 24, 22),  # 00:00 CEST
        utc(2026, 10, 24, 23),  # 01:00 CEST
        utc(2026, 10, 25, 0),  # 02:00 CEST, the first 02:00
        # 01:00Z, the second 02:00 (CET): not run again
        utc(2026, 10, 25, 2),  # 03:00 CET
        utc(2026, 10, 25, 3),  # 04:00 CET
    ]
    assert made == expected
    assert _ticks(schedule) == expected
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 10, 25, 4)
