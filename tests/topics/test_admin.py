"""Topic and subscriber admin pages: they load, and the unsubscribe action calls the service."""

import pytest

from mailqueue.models import Suppression
from topics.models import Subscriber
from topics.services import subscriber_subscribe

pytestmark = pytest.mark.django_db


def test_list_and_detail_pages_load(admin_client, news):
    """Topic and subscriber lists, a topic's form and a subscriber's page answer 200."""
    subscriber = subscriber_subscribe(topic=news, email="ada@example.com").subscriber
    for url in (
        "/admin/topics/topic/",
        f"/admin/topics/topic/{news.pk}/change/",
        "/admin/topics/subscriber/",
        "/admin/topics/subscriber/?status__exact=active&q=ada",
        f"/admin/topics/subscriber/{subscriber.pk}/change/",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_topic_form_refuses_a_bad_time_zone(admin_client, acme):
    """The admin form runs the API's checks."""
    response = admin_client.post(
        "/admin/topics/topic/add/",
        {
            "client": acme.pk,
            "slug": "news",
            "name": "News",
            "subject": "S",
            "text": "T",
            "context": "{}",
            "send_time": "09:00",
            "timezone": "Nowhere/Land",
        },
    )
    assert response.status_code == 200
    assert b"IANA time zone" in response.content


def test_unsubscribe_action(admin_client, news):
    """The action unsubscribes through the service: via admin, with the topic's suppression."""
    subscriber = subscriber_subscribe(topic=news, email="ada@example.com").subscriber
    admin_client.post(
        "/admin/topics/subscriber/",
        {"action": "unsubscribe", "_selected_action": [subscriber.pk]},
    )
    subscriber.refresh_from_db()
    assert (subscriber.status, subscriber.unsubscribed_via) == ("unsubscribed", "admin")
    assert Suppression.objects.get().topic == "news"
    assert Subscriber.objects.count() == 1
