"""Reads of topics and subscribers."""

from django.db.models import QuerySet
from django.http import Http404

from mailqueue.models import Client, Suppression, SuppressionReason
from mailqueue.validation import address_spec, normalize_address
from topics.confirmation import ConfirmToken
from topics.models import Subscriber, Topic


def topic_list(*, client: Client) -> QuerySet[Topic]:
    """A client's topics, newest first."""
    return Topic.objects.filter(client=client).order_by("-created_at", "-id")


def topic_get(*, client: Client, slug: str) -> Topic:
    """One of the client's topics by slug, or 404 (another client's topic is not there)."""
    topic = Topic.objects.filter(client=client, slug=slug).first()
    if topic is None:
        raise Http404(f"No topic with slug '{slug}'.")
    return topic


def subscriber_list(*, topic: Topic, status: str | None = None) -> QuerySet[Subscriber]:
    """A topic's subscribers, newest first, optionally of one status."""
    # Each row's output names its topic: one join, not a query per row.
    subscribers = Subscriber.objects.filter(topic=topic).select_related("topic")
    if status:
        subscribers = subscribers.filter(status=status)
    return subscribers.order_by("-created_at", "-id")


def subscriber_get(*, topic: Topic, email: str) -> Subscriber:
    """The topic's subscriber with this address (any form of it), or 404; ValidationFailed
    naming `email` when it is not an address."""
    spec = address_spec(normalize_address(email, field="email"))
    subscriber = Subscriber.objects.filter(topic=topic, email=spec).first()
    if subscriber is None:
        raise Http404(f"'{spec}' is not a subscriber of topic '{topic.slug}'.")
    subscriber.topic = topic
    return subscriber


def subscribers_of_address(*, address: str) -> QuerySet[Subscriber]:
    """Every subscription of an address (any client's, any status), with topic and client: what
    a GDPR export shows and an erase deletes."""
    return (
        Subscriber.objects.filter(email=address_spec(address))
        .select_related("topic", "topic__client")
        .order_by("topic__client__name", "topic__slug")
    )


def address_blocking_reason(*, address: str) -> str | None:
    """The reason of a hard-bounce or complaint suppression of an address (these stop every
    client's email, so nobody may subscribe it), or None."""
    return (
        Suppression.objects.filter(
            address=address,
            client__isnull=True,
            reason__in=[SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT],
        )
        .values_list("reason", flat=True)
        .first()
    )


def subscriber_by_token(*, token: ConfirmToken) -> Subscriber | None:
    """The subscriber a confirmation link names (with its topic), or None when it is gone."""
    return (
        Subscriber.objects.filter(pk=token.subscriber_id, email=token.email)
        .select_related("topic")
        .first()
    )
