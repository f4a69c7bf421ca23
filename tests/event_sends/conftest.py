"""Event-driven sends against real Redis and PostgreSQL: publish with XADD, consume in-process."""

import json

import pytest

from event_sends.consumer import EventConsumer
from event_sends.services import event_rule_create
from mailqueue.models import Client
from mailqueue.scheduling import connection as redis_connection
from templates_app.services import template_create

STREAM = "mailqueue:events"
DEAD = "mailqueue:events:dead"


@pytest.fixture(autouse=True)
def _fast_reads(settings):
    """Reads wait 50 ms, not seconds, for new entries."""
    settings.MAILQUEUE_EVENTS_BLOCK_SECONDS = 0.05


@pytest.fixture
def redis():
    """This test run's own Redis DB (flushed before each test)."""
    return redis_connection()


@pytest.fixture
def acme(db) -> Client:
    """The client `acme`."""
    return Client.objects.get_or_create(name="acme")[0]


@pytest.fixture
def booking_template(db):
    """A template that requires `name` and `service`."""
    return template_create(
        slug="booking-confirmation",
        name="Booking confirmed",
        subject="{{ name }}, your {{ service }} is booked",
        html="<p>See you, {{ name }}</p>",
        text="See you, {{ name }}",
        variables=["name", "service"],
        sample_context={"name": "Ada", "service": "haircut"},
    )


@pytest.fixture
def booking_rule(acme, booking_template):
    """acme's booking.confirmed events email data.user.email with data.booking as context."""
    return event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="booking-confirmation",
        recipient_path="user.email",
        context_path="booking",
        priority="high",
        tags=["booking", "events"],
    )


def booking_event(event_id: str = "evt-1", **overrides) -> dict:
    """A booking.confirmed event of acme."""
    event = {
        "id": event_id,
        "type": "booking.confirmed",
        "client": "acme",
        "data": {
            "user": {"email": "ada@example.com"},
            "booking": {"name": "Ada", "service": "haircut"},
        },
    }
    event.update(overrides)
    return event


def publish(redis, event: dict | str | bytes) -> str:
    """XADD an event the way producers do: one field `event` holding its JSON."""
    raw = event if isinstance(event, (str, bytes)) else json.dumps(event)
    return redis.xadd(STREAM, {"event": raw}).decode()


def consume(steps: int = 3, *, name: str = "test-consumer") -> EventConsumer:
    """Run a consumer in this process for a few reads (enqueueing on commit as in production)."""
    consumer = EventConsumer(name=name)
    consumer.run(max_steps=steps)
    return consumer


def dead_letters(redis) -> list[dict[str, str]]:
    """The dead-letter stream's entries, oldest first, as text."""
    return [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _, fields in redis.xrange(DEAD)
    ]


def pending_count(redis) -> int:
    """Entries read by some consumer of the group and not acknowledged."""
    return redis.xpending(STREAM, "mailqueue")["pending"]
