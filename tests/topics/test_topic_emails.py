"""Emails for a topic's subscriber: the topic's template or own content, rendered with the
topic's context then the subscriber's, sent by a real worker with the topic's RFC 8058 headers."""

import re

import pytest

from mailqueue.errors import ValidationFailed
from mailqueue.unsubscribe import token_read
from topics.errors import SubscriptionConflict
from topics.models import Topic
from topics.selectors import subscribers_of_address
from topics.services import (
    subscriber_subscribe,
    subscriber_unsubscribe,
    topic_create,
    topic_email_create,
)

pytestmark = pytest.mark.django_db


def _send(topic, subscriber, capture):
    with capture(execute=True):
        return topic_email_create(topic=topic, subscriber=subscriber)


def _unsubscribe_token(message):
    match = re.search(r"<https://mail\.acme\.test/u/([^/>]+)/>", message["List-Unsubscribe"])
    assert match, message["List-Unsubscribe"]
    return token_read(match.group(1))


def test_own_content_topic_email_merges_contexts_and_carries_the_headers(
    news, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """The subscriber's context overrides the topic's; the email goes out with List-Unsubscribe
    (naming this topic and address) and List-Unsubscribe-Post."""
    subscriber = subscriber_subscribe(
        topic=news, email="ada@example.com", context={"city": "London"}
    ).subscriber

    email = _send(news, subscriber, django_capture_on_commit_callbacks)
    work()

    email.refresh_from_db()
    assert (email.status, email.topic, email.transactional) == ("sent", "news", False)
    message = smtp_sink.messages[0].message
    assert message["Subject"] == "News for reader"
    bodies = [part.get_content() for part in message.walk() if not part.is_multipart()]
    assert any("Hello reader from London" in body for body in bodies)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = _unsubscribe_token(message)
    assert (token.address, token.topic, token.email_id) == ("ada@example.com", "news", email.pk)


def test_template_topic_email_pins_the_template_version(
    acme, welcome_template, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """A template topic sends the template's current version with the merged context."""
    topic = topic_create(
        client=acme,
        slug="welcome-series",
        name="Welcome",
        template="welcome",
        context={"name": "x"},
    )
    subscriber = subscriber_subscribe(
        topic=topic, email="bob@example.com", context={"name": "Bob"}
    ).subscriber

    email = _send(topic, subscriber, django_capture_on_commit_callbacks)
    work()

    assert email.template_version.number == welcome_template.version
    message = smtp_sink.messages[0].message
    assert message["Subject"] == "Welcome, Bob!"
    assert _unsubscribe_token(message).topic == "welcome-series"


def test_only_active_subscribers_of_the_topic_get_its_emails(acme, news):
    """An unsubscribed subscriber, or one of another topic, is refused."""
    other = topic_create(client=acme, slug="other", name="Other", subject="S", text="T")
    subscriber = subscriber_subscribe(topic=news, email="ada@example.com").subscriber
    with pytest.raises(ValidationFailed):
        topic_email_create(topic=other, subscriber=subscriber)
    subscriber_unsubscribe(subscriber=subscriber)
    with pytest.raises(SubscriptionConflict):
        topic_email_create(topic=news, subscriber=subscriber)


def test_subscribers_of_address_finds_every_subscription(acme, news, api_for):
    """The GDPR selector finds an address's subscriptions of every topic and client."""
    other_client = api_for("globex", ["templates"])
    other_client.post(
        "/api/v1/topics/",
        {"slug": "news", "name": "N", "subject": "S", "text": "T"},
        format="json",
    )
    theirs = Topic.objects.exclude(client=acme).get()
    subscriber_subscribe(topic=news, email="ada@example.com")
    subscriber_subscribe(topic=theirs, email="Ada@Example.com")
    subscriber_subscribe(topic=news, email="bob@example.com")

    found = subscribers_of_address(address="ADA@example.com")

    assert sorted(s.topic.client.name for s in found) == ["acme", "globex"]
