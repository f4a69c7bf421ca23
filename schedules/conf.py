"""Options of recurring sends: each one's setting name and default are written here only.

Read at call time through `mailqueue.conf.get_setting`, like Mailqueue's own options.
"""

from mailqueue.conf import get_setting


def chunk_size() -> int:
    """Subscribers a run expands per transaction (their emails commit with its progress)."""
    return get_setting("MAILQUEUE_SCHEDULE_CHUNK_SIZE", 1000, int, minimum=1)


def expand_seconds() -> float:
    """How long one scheduler pass may spend expanding runs; the next pass goes on."""
    return get_setting("MAILQUEUE_SCHEDULE_EXPAND_SECONDS", 10.0, float, minimum=0)


def missed_grace_seconds() -> int:
    """How late a tick may run and still count as on time (not missed) under `skip`."""
    return get_setting("MAILQUEUE_SCHEDULE_MISSED_GRACE", 60, int, minimum=0)


def recipients_max() -> int:
    """Most addresses a schedule's fixed `recipients` list may hold (a topic has no limit)."""
    return get_setting("MAILQUEUE_SCHEDULE_RECIPIENTS_MAX", 1000, int, minimum=1)
