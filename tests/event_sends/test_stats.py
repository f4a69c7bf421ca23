"""events_stream_stats: the numbers /metrics exposes as email_events_*."""

import pytest

from event_sends import streams
from event_sends.selectors import events_stream_stats
from tests.event_sends.conftest import STREAM, booking_event, consume, publish

pytestmark = pytest.mark.django_db


def test_nothing_published_is_all_zero(redis):
    """No stream yet: zeros, not an error."""
    assert events_stream_stats() == {"lag": 0, "pending": 0, "dead_letters": 0, "consumers": 0}


def test_entries_before_any_consumer_are_lag(redis):
    """Without a group every entry waits."""
    for number in range(3):
        publish(redis, booking_event(f"e{number}"))

    assert events_stream_stats()["lag"] == 3


def test_lag_pending_dead_letters_and_consumers(redis, booking_rule):
    """Handled entries leave the lag, read-but-unacknowledged ones are pending, poison ones
    are dead letters; consumers are those in the group (one that stopped cleanly has left)."""
    publish(redis, booking_event("a"))
    publish(redis, "{bad json")
    consume(name="one")
    for number in range(4):
        publish(redis, booking_event(f"b{number}"))
    streams.entries_read(redis, consumer="two", count=1, block_ms=10)

    assert events_stream_stats() == {"lag": 3, "pending": 1, "dead_letters": 1, "consumers": 1}


def test_lag_is_counted_when_redis_cannot_tell_it(redis, booking_rule):
    """After an entry is deleted Redis 7 reports no lag: it is counted from the stream."""
    consume(steps=1, name="one")  # creates the group
    first = publish(redis, booking_event("a"))
    publish(redis, booking_event("b"))
    redis.xdel(STREAM, first)

    stats = events_stream_stats()

    assert stats["lag"] == 1
