"""Options of event-driven sends: each one's setting name and default are written here only.

Read at call time through `mailqueue.conf.get_setting`, like Mailqueue's own options;
`config/settings.py` maps the MAILQUEUE_EVENTS_* variables onto these settings.
"""

from mailqueue.conf import get_setting


def _name(value: object) -> str:
    """A non-empty Redis key or group name."""
    text = str(value).strip()
    if not text:
        raise ValueError("expected a non-empty name")
    return text


def events_stream() -> str:
    """The Redis Stream other services XADD events to."""
    return get_setting("MAILQUEUE_EVENTS_STREAM", "mailqueue:events", _name)


def events_dead_stream() -> str:
    """The stream events that can never make an email are moved to: `<stream>:dead`."""
    return f"{events_stream()}:dead"


def events_group() -> str:
    """The consumer group every `consume_events` process joins (they share the entries)."""
    return get_setting("MAILQUEUE_EVENTS_GROUP", "mailqueue", _name)


def events_claim_idle_seconds() -> float:
    """How long an entry may stay unacknowledged before another consumer takes it over."""
    return get_setting("MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS", 60.0, float, minimum=0)


def events_stale_consumer_seconds() -> float:
    """How long a consumer of the group with nothing pending may stay idle before it is removed
    from the group: each process joins under its own name, and one killed before it could
    leave would otherwise be listed (and counted) forever. A live consumer reads every few
    seconds, so the default, max(1 hour, 10 x the claim idle time), never hits one."""
    default = max(3600.0, 10 * events_claim_idle_seconds())
    return get_setting("MAILQUEUE_EVENTS_STALE_CONSUMER_SECONDS", default, float, minimum=0)


def events_block_seconds() -> float:
    """How long one read waits for new entries (also how fast a stop request is noticed)."""
    return get_setting("MAILQUEUE_EVENTS_BLOCK_SECONDS", 2.0, float, minimum=0.01)


def events_batch_size() -> int:
    """Entries one read takes at a time."""
    return get_setting("MAILQUEUE_EVENTS_BATCH_SIZE", 10, int, minimum=1)


def events_max_deliveries() -> int:
    """Reads of one entry (its own plus take-overs) after which it is dead-lettered: an entry
    that keeps failing for an unexpected reason must not be retried forever."""
    return get_setting("MAILQUEUE_EVENTS_MAX_DELIVERIES", 5, int, minimum=1)


def events_dead_max_len() -> int:
    """About how many dead letters are kept (older ones are trimmed when new ones arrive)."""
    return get_setting("MAILQUEUE_EVENTS_DEAD_MAX_LEN", 10000, int, minimum=1)


def events_handled_keep_days() -> int:
    """Days the record of a handled (event, rule) pair is kept: an event delivered again
    within this time creates no second email (exactly once holds within it); one arriving
    later is handled as new. The scheduler's daily housekeeping deletes older records."""
    return get_setting("MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS", 30, int, minimum=1)
