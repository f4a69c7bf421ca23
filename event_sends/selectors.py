"""Reads of event-driven sends: a client's rules, the dead letters, the stream's numbers."""

from django.db.models import QuerySet

from event_sends import streams
from event_sends.errors import EventRuleNotFound
from event_sends.models import EventRule
from mailqueue.models import Client
from mailqueue.scheduling import connection


def event_rule_list(*, client: Client) -> QuerySet[EventRule]:
    """A client's rules, by event type."""
    return EventRule.objects.filter(client=client).order_by("event_type", "id")


def event_rule_get(*, client: Client, rule_id: int) -> EventRule:
    """One of the client's rules, or EventRuleNotFound (another client's rule is not found)."""
    rule = EventRule.objects.filter(client=client, pk=rule_id).first()
    if rule is None:
        raise EventRuleNotFound(f"No event rule {rule_id}.")
    return rule


def event_rules_for_event(*, client: Client, event_type: str) -> list[EventRule]:
    """The rules an event of this client and type triggers, oldest first."""
    return list(EventRule.objects.filter(client=client, event_type=event_type).order_by("id"))


def dead_letter_list(*, count: int = 100, before: str | None = None) -> list[streams.DeadLetter]:
    """Dead letters, newest first (older than entry `before`, for the next page)."""
    return streams.dead_letters_list(connection(), count=count, before=before)


def events_stream_stats() -> dict[str, int]:
    """`lag` (entries no consumer has read yet), `pending` (read, not yet acknowledged),
    `dead_letters` and `consumers` of the events stream: a few constant-time Redis calls.

    Raises RedisError when Redis is unreachable.
    """
    return streams.stream_stats(connection())
