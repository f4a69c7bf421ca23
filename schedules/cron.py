"""Cron expressions in a time zone: the one module that talks to croniter.

Ticks are computed on the zone's wall clock (09:00 Europe/Paris stays 09:00 across DST) and
then turned into UTC instants. A wall time that does not exist (the spring-forward gap) runs at
the first valid instant after it (the end of the gap); a wall time that happens twice (the
fall-back overlap) runs once, at its first occurrence.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterError, croniter

from mailqueue.errors import ValidationFailed

ALIASES = ("@hourly", "@daily", "@weekly", "@monthly")
# Longer than any DST gap in the tz database (the longest is 2 hours).
_GAP_SEARCH_MINUTES = 3 * 60


@lru_cache(maxsize=1)
def _time_zone_names() -> frozenset[str]:
    # Read from the tz database once per process: it does not change while we run.
    return frozenset(available_timezones())


def timezone_validate(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The zone of an IANA name, or ValidationFailed naming `field`."""
    if name not in _time_zone_names():
        raise ValidationFailed(
            f"'{name}' is not an IANA time zone name (such as 'Europe/Paris' or 'UTC').",
            field=field,
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"'{name}' is not a known time zone.", field=field) from None


def cron_validate(expr: str, *, field: str = "cron") -> str:
    """The expression, stripped, if it is five cron fields or one of ALIASES; ValidationFailed
    naming `field` otherwise."""
    expr = " ".join(str(expr).split())
    if expr.startswith("@"):
        if expr not in ALIASES:
            raise ValidationFailed(
                f"'{expr}' is not a supported alias: use one of {', '.join(ALIASES)}.",
                field=field,
            )
        return expr
    if len(expr.split(" ")) != 5:
        raise ValidationFailed(
            f"'{expr}' is not a cron expression: give five fields (minute hour day-of-month "
            "month day-of-week), e.g. '0 9 * * 1'.",
            field=field,
        )
    try:
        # Building the iterator and asking for one tick catches every syntax and range error
        # (an impossible date such as '0 9 30 2 *' too).
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValidationFailed(
            f"'{expr}' is not a valid cron expression: {exc}", field=field
        ) from None
    return expr


def _local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall time in `zone` runs at (gap: its end; overlap: the first)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return aware.astimezone(UTC)
    # In a gap: the first wall-clock minute after it that exists is where the clock lands.
    for minutes in range(1, _GAP_SEARCH_MINUTES + 1):
        later = (wall + timedelta(minutes=minutes)).replace(second=0, microsecond=0)
        aware = later.replace(tzinfo=zone)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == later:
            return aware.astimezone(UTC)
    return wall.replace(tzinfo=zone).astimezone(UTC)  # pragma: no cover (no such zone)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """An aware instant as a naive wall time in `zone`."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _ticks(expr: str, zone: ZoneInfo, start: datetime, *, forward: bool) -> Iterator[datetime]:
    """UTC instants of the expression's wall times, from a naive wall time, in one direction."""
    iterator = croniter(expr, start)
    step = iterator.get_next if forward else iterator.get_prev
    while True:
        yield _local_instant(step(datetime), zone)


def cron_next(expr: str, tz: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next `count` ticks strictly after an aware instant, as aware UTC datetimes."""
    zone = ZoneInfo(tz)
    result: list[datetime] = []
    # One hour back: in a fall-back overlap the wall clock repeats, and a tick whose first
    # occurrence is before `after` must not come back as its second.
    for tick in _ticks(expr, zone, _wall(after, zone) - timedelta(hours=1), forward=True):
        if tick > after and (not result or tick > result[-1]):
            result.append(tick)
            if len(result) == count:
                return result
    return result  # pragma: no cover (the iterator is endless)


def cron_previous(expr: str, tz: str, at_or_before: datetime) -> datetime:
    """The latest tick at or before an aware instant, as an aware UTC datetime."""
    zone = ZoneInfo(tz)
    # A little ahead, so a tick at exactly `at_or_before` (or mapped there from a gap) counts.
    start = _wall(at_or_before, zone) + timedelta(hours=3)
    for tick in _ticks(expr, zone, start, forward=False):
        if tick <= at_or_before:
            return tick
    raise AssertionError("unreachable")  # pragma: no cover (the iterator is endless)
