"""Subscribers through the API: idempotent subscribe, lists with a status filter, unsubscribe
(kept row + the topic's suppression), resubscribe, and addresses that bounced or complained."""

import pytest

from mailqueue.models import Suppression, SuppressionReason
from mailqueue.services.suppressions import NewSuppression, suppressions_add
from topics.models import Subscriber

pytestmark = pytest.mark.django_db


def _topic_suppressions(address: str = "ada@example.com"):
    return Suppression.objects.filter(
        address=address, topic="news", reason=SuppressionReason.UNSUBSCRIBE
    )


def test_subscribe_is_201_then_200_and_normalises_the_address(news, subscribe):
    """The first subscribe creates an active subscriber; a repeat returns it (200)."""
    first = subscribe(email="Ada Lovelace <Ada@Example.COM>", context={"city": "London"})
    assert first.status_code == 201, first.json()
    body = first.json()
    assert (body["email"], body["status"], body["topic"]) == ("ada@example.com", "active", "news")
    assert body["context"] == {"city": "London"} and body["frequency"] == ""

    again = subscribe(email="ada@example.com", frequency="@weekly")
    assert again.status_code == 200
    assert again.json()["frequency"] == "@weekly"
    assert again.json()["context"] == {"city": "London"}
    assert Subscriber.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@example.com", "frequency": "@yearly"}, "frequency"),
        ({"email": "a@example.com", "context": "x"}, "context"),
        ({"email": "a@example.com", "emial": "typo"}, "emial"),
    ],
)
def test_bad_subscriptions_are_400_naming_the_field(news, subscribe, body, field):
    """Each refused body names its field; nothing is stored."""
    response = subscribe(**body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Subscriber.objects.exists()


def test_unknown_topic_is_404(acme, subscribe):
    """Subscribing to a topic the client does not have is 404."""
    assert subscribe("nope", email="ada@example.com").status_code == 404


def test_list_filters_by_status_in_cursor_pages(api, news, subscribe):
    """Newest first in cursor pages; `status` keeps one status; a bad status is 400."""
    for name in ("a", "b", "c"):
        subscribe(email=f"{name}@example.com")
    api.delete("/api/v1/topics/news/subscribers/b@example.com/")

    page = api.get("/api/v1/topics/news/subscribers/?page_size=2").json()
    assert [s["email"] for s in page["results"]] == ["c@example.com", "b@example.com"]
    assert [s["email"] for s in api.get(page["next"]).json()["results"]] == ["a@example.com"]
    active = api.get("/api/v1/topics/news/subscribers/?status=active").json()["results"]
    assert [s["email"] for s in active] == ["c@example.com", "a@example.com"]
    gone = api.get("/api/v1/topics/news/subscribers/?status=unsubscribed").json()["results"]
    assert [(s["email"], s["unsubscribed_via"]) for s in gone] == [("b@example.com", "api")]
    assert api.get("/api/v1/topics/news/subscribers/?status=gone").status_code == 400


def test_delete_unsubscribes_keeps_the_row_and_adds_the_topic_suppression(
    api, acme, news, subscribe
):
    """DELETE is 204: the subscriber is unsubscribed via the API and the address suppressed for
    this topic of this client only; a repeat is 204 too, an unknown address 404."""
    subscribe(email="ada@example.com")

    response = api.delete("/api/v1/topics/news/subscribers/Ada@Example.com/")

    assert response.status_code == 204
    subscriber = Subscriber.objects.get()
    assert (subscriber.status, subscriber.unsubscribed_via) == ("unsubscribed", "api")
    assert subscriber.unsubscribed_at is not None
    suppression = _topic_suppressions().get()
    assert suppression.client == acme
    assert api.delete("/api/v1/topics/news/subscribers/ada@example.com/").status_code == 204
    assert api.delete("/api/v1/topics/news/subscribers/bob@example.com/").status_code == 404
    detail = api.get("/api/v1/topics/news/subscribers/ada@example.com/").json()
    assert detail["status"] == "unsubscribed"


def test_resubscribe_needs_the_flag_and_removes_the_suppression(api, news, subscribe):
    """An address that unsubscribed is 409 without `resubscribe`; with it, active again and no
    longer suppressed for the topic."""
    subscribe(email="ada@example.com")
    api.delete("/api/v1/topics/news/subscribers/ada@example.com/")

    refused = subscribe(email="ada@example.com")
    assert refused.status_code == 409
    assert "email" in refused.json()
    assert _topic_suppressions().exists()

    again = subscribe(email="ada@example.com", resubscribe=True)
    assert again.status_code == 200, again.json()
    assert (again.json()["status"], again.json()["unsubscribed_via"]) == ("active", "")
    assert not _topic_suppressions().exists()


def test_an_unsubscribe_before_any_subscription_counts_too(acme, news, subscribe):
    """An address that left the topic (its suppression) before having a row here is 409 too."""
    suppressions_add(
        entries=[
            NewSuppression(
                address="ada@example.com",
                reason=SuppressionReason.UNSUBSCRIBE,
                client=acme,
                topic="news",
                via="link",
            )
        ]
    )
    assert subscribe(email="ada@example.com").status_code == 409
    assert not Subscriber.objects.exists()
    assert subscribe(email="ada@example.com", resubscribe=True).status_code == 201
    assert not _topic_suppressions().exists()


@pytest.mark.parametrize("reason", [SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT])
def test_bounced_or_complained_address_cannot_be_subscribed(api, news, subscribe, reason):
    """A hard bounce or complaint is 409 naming the reason, even with `resubscribe`; such a
    suppression also ends the address's existing subscriptions."""
    subscribe(email="bob@example.com")
    suppressions_add(entries=[NewSuppression(address="bob@example.com", reason=reason)])
    suppressions_add(entries=[NewSuppression(address="ada@example.com", reason=reason)])

    for body in ({}, {"resubscribe": True}):
        response = subscribe(email="ada@example.com", **body)
        assert response.status_code == 409
        assert response.json()["reason"] == reason
        assert reason in response.json()["email"][0]
    bob = Subscriber.objects.get(email="bob@example.com")
    via = "bounce" if reason == SuppressionReason.HARD_BOUNCE else "complaint"
    assert (bob.status, bob.unsubscribed_via) == ("unsubscribed", via)
    assert subscribe(email="bob@example.com", resubscribe=True).status_code == 409


def test_removing_the_topic_suppression_resubscribes(api, news, subscribe):
    """The suppression and the status are one fact: deleting the topic's unsubscribe through
    the suppression API makes the subscriber active again."""
    subscribe(email="ada@example.com")
    api.delete("/api/v1/topics/news/subscribers/ada@example.com/")

    response = api.delete("/api/v1/suppressions/ada@example.com/?topic=news")

    assert response.status_code == 204
    assert Subscriber.objects.get().status == "active"


def test_scopes(api_for, news):
    """Subscribing needs `send`, listing `read`."""
    reader = api_for("acme", ["read"])
    sender = api_for("acme", ["send"])
    path = "/api/v1/topics/news/subscribers/"
    assert reader.post(path, {"email": "a@example.com"}, format="json").status_code == 403
    assert sender.post(path, {"email": "a@example.com"}, format="json").status_code == 201
    assert sender.get(path).status_code == 403
    assert reader.get(path).status_code == 200
    assert reader.delete(f"{path}a@example.com/").status_code == 403
    assert sender.delete(f"{path}a@example.com/").status_code == 204
