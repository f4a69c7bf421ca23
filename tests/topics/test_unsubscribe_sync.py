"""Unsubscribes that arrive outside the topics API mark the subscriber: the one-click link of
an email sent for the topic (that topic only) and an ESP's unsubscribe event."""

import re

import pytest
from django.test import Client as HttpClient

from mailqueue.models import EmailJob, EmailStatus, Suppression
from tests.tracking.esp_payloads import BASIC_AUTH, WEBHOOK_SECRET, payload, post_json
from topics.models import Subscriber
from topics.services import subscriber_subscribe, topic_create, topic_email_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def digest(acme):
    """A second topic of the same client."""
    return topic_create(client=acme, slug="digest", name="Digest", subject="D", text="Digest")


def _subscribed(topic, email: str = "ada@example.com") -> Subscriber:
    return subscriber_subscribe(topic=topic, email=email).subscriber


def test_one_click_link_unsubscribes_from_that_topic_only(
    news, digest, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """POST /u/<token>/ from a topic email's List-Unsubscribe: that topic's subscriber is
    unsubscribed via `link`, the other topic's stays active; a GET changes nothing."""
    in_news, in_digest = _subscribed(news), _subscribed(digest)
    with django_capture_on_commit_callbacks(execute=True):
        topic_email_create(topic=news, subscriber=in_news)
    work()
    header = smtp_sink.messages[0].message["List-Unsubscribe"]
    path = re.search(r"<https://mail\.acme\.test(/u/[^/>]+/)>", header).group(1)

    browser = HttpClient()
    assert browser.get(path).status_code == 200
    assert Subscriber.objects.get(pk=in_news.pk).status == "active"
    response = browser.post(path, {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    in_news.refresh_from_db()
    in_digest.refresh_from_db()
    assert (in_news.status, in_news.unsubscribed_via) == ("unsubscribed", "link")
    assert in_digest.status == "active"
    assert Suppression.objects.get().topic == "news"


def test_the_link_in_the_body_of_an_own_content_topic_works_too(acme, public):
    """`{{ unsubscribe_url }}` in a topic's own content links to the one-click page."""
    topic = topic_create(
        client=acme,
        slug="letters",
        name="Letters",
        subject="Letter",
        text="Leave: {{ unsubscribe_url }}",
    )
    subscriber = _subscribed(topic)
    email = topic_email_create(topic=topic, subscriber=subscriber)
    path = re.search(r"https://mail\.acme\.test(/u/\S+/)", email.text).group(1)

    assert HttpClient().post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200

    subscriber.refresh_from_db()
    assert (subscriber.status, subscriber.unsubscribed_via) == ("unsubscribed", "link")


def test_esp_unsubscribe_event_marks_the_subscriber_via_esp(acme, news, digest, settings):
    """A Postmark subscription change for an email of the topic: unsubscribed via `esp`."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
    in_news, in_digest = _subscribed(news), _subscribed(digest)
    email = topic_email_create(topic=news, subscriber=in_news)
    message_id = "883953f4-6105-42a2-a16a-77a8eac79483"
    EmailJob.objects.filter(pk=email.pk).update(
        status=EmailStatus.SENT, message_id=message_id, provider="postmark"
    )

    response = post_json(
        "/webhooks/postmark/tracking/",
        payload("postmark_subscription_change.json", EMAIL_ID=str(email.pk)),
        HTTP_AUTHORIZATION=BASIC_AUTH,
    )

    assert response.status_code == 200
    in_news.refresh_from_db()
    assert (in_news.status, in_news.unsubscribed_via) == ("unsubscribed", "esp")
    assert in_news.unsubscribed_at is not None
    assert Subscriber.objects.get(pk=in_digest.pk).status == "active"
    assert Suppression.objects.get().topic == "news"
