"""Cron expressions in a time zone: DST gaps and overlaps, month ends, aliases, validation."""

from datetime import UTC, datetime

import pytest

from mailqueue.errors import ValidationFailed
from schedules.cron import cron_next, cron_previous, cron_validate, timezone_validate


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_nine_in_paris_stays_nine_across_spring_forward():
    """09:00 Europe/Paris is 08:00Z in winter and 07:00Z once summer time starts."""
    ticks = cron_next("0 9 * * *", "Europe/Paris", utc(2026, 3, 27, 12), 4)
    assert ticks == [
        utc(2026, 3, 28, 8),
        utc(2026, 3, 29, 7),
        utc(2026, 3, 30, 7),
        utc(2026, 3, 31, 7),
    ]


def test_a_time_in_the_spring_forward_gap_runs_at_the_end_of_the_gap():
    """02:30 does not exist on 2026-03-29 in Paris (02:00 -> 03:00): it runs at 03:00 CEST."""
    ticks = cron_next("30 2 * * *", "Europe/Paris", utc(2026, 3, 28, 12), 3)
    assert ticks == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_a_time_in_the_fall_back_overlap_runs_once_at_its_first_occurrence():
    """02:30 happens twice on 2026-10-25 in Paris: it runs once, at 02:30 CEST (00:30Z)."""
    ticks = cron_next("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12), 3)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    # Asked from inside the overlap (after the first 02:30), the second 02:30 does not run.
    assert cron_next("30 2 * * *", "Europe/Paris", utc(2026, 10, 25, 0, 45))[0] == utc(
        2026, 10, 26, 1, 30
    )


def test_the_31st_runs_only_in_months_that_have_one():
    ticks = cron_next("0 9 31 * *", "UTC", utc(2026, 1, 1), 4)
    assert ticks == [
        utc(2026, 1, 31, 9),
        utc(2026, 3, 31, 9),
        utc(2026, 5, 31, 9),
        utc(2026, 7, 31, 9),
    ]


def test_aliases_weekly_and_monthly():
    """@weekly is Sunday midnight, @monthly the 1st at midnight (in the zone)."""
    assert cron_next("@weekly", "UTC", utc(2026, 1, 1), 2) == [utc(2026, 1, 4), utc(2026, 1, 11)]
    assert cron_next("@monthly", "Europe/Paris", utc(2026, 1, 15), 2) == [
        utc(2026, 1, 31, 23),
        utc(2026, 2, 28, 23),
    ]


def test_next_is_strictly_after_and_previous_is_at_or_before():
    assert cron_next("0 9 * * *", "UTC", utc(2026, 1, 1, 9))[0] == utc(2026, 1, 2, 9)
    assert cron_previous("0 9 * * *", "UTC", utc(2026, 1, 1, 9)) == utc(2026, 1, 1, 9)
    assert cron_previous("0 9 * * *", "UTC", utc(2026, 1, 1, 8, 59)) == utc(2025, 12, 31, 9)
    assert cron_previous("30 2 * * *", "Europe/Paris", utc(2026, 3, 29, 1, 5)) == utc(
        2026, 3, 29, 1
    )


@pytest.mark.parametrize(
    "expr", ["", "61 * * * *", "* * * *", "0 0 * * * *", "@yearly", "@reboot", "0 9 30 2 *", "x"]
)
def test_bad_cron_names_the_field(expr):
    with pytest.raises(ValidationFailed) as caught:
        cron_validate(expr)
    assert caught.value.field == "cron"


@pytest.mark.parametrize(
    "expr", ["0 9 * * 1-5", "*/15 * * * *", "@hourly", "@daily", "0 9 1 * MON"]
)
def test_good_cron_is_accepted(expr):
    assert cron_validate(expr) == expr


def test_bad_timezone_names_the_field():
    with pytest.raises(ValidationFailed) as caught:
        timezone_validate("Mars/Olympus")
    assert caught.value.field == "timezone"
