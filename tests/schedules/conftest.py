"""Fixtures for recurring sends: the client `acme`, a topic with its own content, subscribers."""

import pytest

from topics.models import Subscriber, SubscriberStatus, Topic
from topics.services import topic_create


@pytest.fixture(autouse=True)
def frequency_sync_every_pass(monkeypatch):
    """Each pass syncs the frequency schedules (the scheduler's process does it every 30 s):
    the tests tick at made-up instants, far apart, within a few milliseconds."""
    from schedules import services

    monkeypatch.setattr(services, "FREQUENCY_SYNC_INTERVAL_SECONDS", 0.0)
    monkeypatch.setattr(services, "_frequency_synced_at", None)


@pytest.fixture
def acme(issued_key):
    """The client `acme`, whose key the `api` fixture uses."""
    return issued_key.api_key.client


@pytest.fixture
def news(acme) -> Topic:
    """A topic with its own content that greets `name` (topic context) from `city`."""
    return topic_create(
        client=acme,
        slug="news",
        name="Acme news",
        subject="News for {{ name }}",
        html="<p>Hello {{ name }} from {{ city }} {{ unsubscribe_url }}</p>",
        text="Hello {{ name }} from {{ city }}",
        context={"name": "reader", "city": "nowhere"},
    )


@pytest.fixture
def add_subscribers():
    """Factory: active subscribers of a topic in one INSERT (addresses user<i>@example.com)."""

    def add(topic: Topic, count: int, *, frequency: str = "", start: int = 0, **fields):
        Subscriber.objects.bulk_create(
            Subscriber(
                topic=topic,
                email=f"user{index}@example.com",
                status=fields.get("status", SubscriberStatus.ACTIVE),
                frequency=frequency,
                context=fields.get("context", {}),
            )
            for index in range(start, start + count)
        )

    return add
