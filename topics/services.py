"""Writes of topics and subscriptions, and the emails sent for them.

A subscriber's `unsubscribed` status and its topic's unsubscribe suppression are one fact: every
suppression written through `mailqueue.services.suppressions` calls
`subscribers_unsubscribe_suppressed` in its transaction, and every removal calls
`subscribers_resume_unsuppressed`, so whichever way an unsubscribe arrives (the API, the
one-click link, an ESP event, the admin) both sides change together.
"""

import functools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import available_timezones

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from mailqueue.errors import ValidationFailed
from mailqueue.models import ApiKey, Client, EmailJob, Priority, Suppression, SuppressionReason
from mailqueue.services.emails import email_create, inline_content_render
from mailqueue.services.suppressions import NewSuppression, suppressions_add, suppressions_remove
from mailqueue.validation import address_spec, normalize_address
from templates_app.selectors import template_get_active
from templates_app.services import template_validate_sources
from topics import conf
from topics.confirmation import confirm_url
from topics.errors import SubscriptionConflict
from topics.models import Subscriber, SubscriberStatus, Topic, UnsubscribedVia
from topics.selectors import address_blocking_reason

# Fields of a topic a client sets (the slug is set once, at creation).
TOPIC_FIELDS = (
    "name",
    "description",
    "template",
    "subject",
    "html",
    "text",
    "context",
    "double_opt_in",
    "send_time",
    "timezone",
)


@lru_cache(maxsize=1)
def _time_zone_names() -> frozenset[str]:
    # Read from the tz database once per process: it does not change while we run.
    return frozenset(available_timezones())


def topic_validate(*, template: str, subject: str, html: str, text: str, timezone: str) -> None:
    """Raise ValidationFailed (or TemplateRenderError) naming the field a topic cannot have:
    content is a template or its own subject with html/text, never both; the template must be
    active, its own parts must compile, the time zone must be an IANA name."""
    if template:
        if subject or html or text:
            raise ValidationFailed(
                "Give either 'template' or the topic's own 'subject' with 'html' and/or "
                "'text', not both.",
                field="template",
            )
        template_get_active(slug=template, field="template")
    else:
        if not subject:
            raise ValidationFailed(
                "Give either 'template' or the topic's own 'subject' with 'html' and/or 'text'.",
                field="subject",
            )
        if not (html or text):
            raise ValidationFailed("Give 'html' and/or 'text'.", field="html")
        template_validate_sources(subject=subject, html=html, text=text)
    if timezone not in _time_zone_names():
        raise ValidationFailed(
            f"'{timezone}' is not an IANA time zone name (such as 'Europe/Paris' or 'UTC').",
            field="timezone",
        )


def _duplicate_slug(slug: str) -> ValidationFailed:
    return ValidationFailed(f"A topic with slug '{slug}' already exists.", field="slug")


@transaction.atomic
def topic_create(*, client: Client, slug: str, **fields) -> Topic:
    """Create one of a client's topics after checking its content; a slug the client already
    uses is refused naming `slug`."""
    if Topic.objects.filter(client=client, slug=slug).exists():
        raise _duplicate_slug(slug)
    given = {name: value for name, value in fields.items() if name in TOPIC_FIELDS}
    topic = Topic(client=client, slug=slug, **given)
    topic_validate(
        template=topic.template,
        subject=topic.subject,
        html=topic.html,
        text=topic.text,
        timezone=topic.timezone,
    )
    try:
        # A savepoint: a concurrent create of the same slug loses here, not at the commit.
        with transaction.atomic():
            topic.save()
    except IntegrityError:
        raise _duplicate_slug(slug) from None
    return topic


@transaction.atomic
def topic_update(*, topic: Topic, **fields) -> Topic:
    """Change a topic; its next emails use the new content, emails already made keep theirs."""
    # Locked, so two concurrent partial edits cannot leave a mix that was never validated.
    Topic.objects.select_for_update().filter(pk=topic.pk).first()
    for key, value in fields.items():
        if key in TOPIC_FIELDS:
            setattr(topic, key, value)
    topic_validate(
        template=topic.template,
        subject=topic.subject,
        html=topic.html,
        text=topic.text,
        timezone=topic.timezone,
    )
    topic.save()
    return topic


def topic_delete(*, topic: Topic) -> None:
    """Delete a topic and its subscribers; its unsubscribe suppressions stay (should the slug
    come back, the addresses that left it are still not sent to)."""
    topic.delete()


# --- Subscriptions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """The subscriber a subscribe request left, and whether it created the row."""

    subscriber: Subscriber
    created: bool


def _checked_email(email: str) -> str:
    """The bare lowercased addr-spec of a valid address; ValidationFailed naming `email`."""
    return address_spec(normalize_address(email, field="email"))


def _check_deliverable(email: str) -> None:
    """Refuse an address a hard bounce or a complaint suppresses (409 naming the reason)."""
    reason = address_blocking_reason(address=email)
    if reason:
        raise SubscriptionConflict(
            f"'{email}' cannot be subscribed: it is on the suppression list ({reason}).",
            reason=reason,
        )


def _unsubscribed_conflict(email: str, topic: Topic) -> SubscriptionConflict:
    return SubscriptionConflict(
        f"'{email}' unsubscribed from topic '{topic.slug}'; send \"resubscribe\": true to "
        "subscribe it again (only with the person's consent)."
    )


def _topic_unsubscribe_removed(topic: Topic, email: str) -> None:
    suppressions_remove(
        client=topic.client, address=email, topic=topic.slug, reason=SuppressionReason.UNSUBSCRIBE
    )


@transaction.atomic
def subscriber_subscribe(
    *,
    topic: Topic,
    email: str,
    context: dict | None = None,
    frequency: str | None = None,
    resubscribe: bool = False,
    api_key: ApiKey | None = None,
) -> Subscription:
    """Subscribe an address to a topic: a new subscriber is active, or pending with a
    confirmation email sent when the topic asks for double opt-in; an existing one is returned
    (with the context and frequency given, if any). A repeat for a pending subscriber sends a
    new confirmation email (its first link may have expired), at most one per
    `confirm_resend_seconds`.

    An address that unsubscribed is refused (409) unless `resubscribe`, which makes it active
    again and removes the topic's unsubscribe suppression; an address under a hard-bounce or
    complaint suppression is always refused (409 naming the reason). The confirmation email of a
    subscription made with a test key (`api_key`) goes to the simulator, as its other emails do.
    """
    email = _checked_email(email)
    _check_deliverable(email)
    subscriber = Subscriber.objects.select_for_update().filter(topic=topic, email=email).first()
    if subscriber is None:
        subscriber = _subscriber_create(topic, email, context, frequency, resubscribe, api_key)
        if subscriber is not None:
            return Subscription(subscriber=subscriber, created=True)
        # A concurrent request created it first: carry on as a repeat of that one.
        subscriber = Subscriber.objects.select_for_update().get(topic=topic, email=email)
    changes: dict = {}
    if context is not None:
        changes["context"] = context
    if frequency is not None:
        changes["frequency"] = frequency
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        if not resubscribe:
            raise _unsubscribed_conflict(email, topic)
        _topic_unsubscribe_removed(topic, email)
        changes.update(status=SubscriberStatus.ACTIVE, unsubscribed_at=None, unsubscribed_via="")
    if subscriber.status == SubscriberStatus.PENDING and _confirmation_resend_due(subscriber):
        # The row is locked (select_for_update): two repeats cannot both send.
        subscriber.topic = topic
        subscriber_confirmation_send(subscriber=subscriber, api_key=api_key)
        changes["confirmation_sent_at"] = timezone.now()
    if changes:
        Subscriber.objects.filter(pk=subscriber.pk).update(**changes, updated_at=timezone.now())
        subscriber.refresh_from_db()
    subscriber.topic = topic
    return Subscription(subscriber=subscriber, created=False)


def _confirmation_resend_due(subscriber: Subscriber) -> bool:
    """Whether a pending subscriber's last confirmation email is old enough to send another."""
    sent_at = subscriber.confirmation_sent_at
    if sent_at is None:
        return True  # subscribed before the time of sending was recorded
    return (timezone.now() - sent_at).total_seconds() >= conf.confirm_resend_seconds()


def _subscriber_create(
    topic: Topic,
    email: str,
    context: dict | None,
    frequency: str | None,
    resubscribe: bool,
    api_key: ApiKey | None,
) -> Subscriber | None:
    """A new subscriber row (and its confirmation email), or None if another request made it."""
    # An address can have left the topic before it had a row here (a one-click link in an email
    # sent with the topic): its unsubscribe suppression is the same fact as a row that left.
    left = Suppression.objects.filter(
        client=topic.client, address=email, topic=topic.slug, reason=SuppressionReason.UNSUBSCRIBE
    ).exists()
    if left:
        if not resubscribe:
            raise _unsubscribed_conflict(email, topic)
        _topic_unsubscribe_removed(topic, email)
    pending = topic.double_opt_in
    try:
        with transaction.atomic():
            subscriber = Subscriber.objects.create(
                topic=topic,
                email=email,
                context=context or {},
                frequency=frequency or "",
                status=SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE,
                confirmation_sent_at=timezone.now() if pending else None,
            )
    except IntegrityError:
        return None
    if pending:
        subscriber_confirmation_send(subscriber=subscriber, api_key=api_key)
    return subscriber


def subscriber_confirmation_send(
    *, subscriber: Subscriber, api_key: ApiKey | None = None
) -> EmailJob:
    """Email a pending subscriber the link that confirms their subscription (high priority,
    transactional: it is the answer to their own request)."""
    topic = subscriber.topic
    context = {"topic": topic, "confirm_url": confirm_url(subscriber)}
    return email_create(
        client=topic.client,
        api_key=api_key,
        to=[subscriber.email],
        # Folded to one line: a topic's name could hold a line break, a subject cannot.
        subject=" ".join(f"Confirm your subscription to {topic.name}".split()),
        html=render_to_string("topics/confirmation_email.html", context),
        text=render_to_string("topics/confirmation_email.txt", context),
        priority=Priority.HIGH,
        tags=["topic-confirmation"],
        metadata={"topic": topic.slug},
        # The link must reach us as it is, not through a click-tracking redirect.
        track_opens=False,
        track_clicks=False,
    )


def subscriber_confirm(*, subscriber_id: int, email: str) -> Subscriber | None:
    """Make a pending subscriber active (a subscriber in any other status is left as it is);
    the subscriber, or None when it no longer exists."""
    now = timezone.now()
    Subscriber.objects.filter(
        pk=subscriber_id, email=email, status=SubscriberStatus.PENDING
    ).update(status=SubscriberStatus.ACTIVE, confirmed_at=now, updated_at=now)
    return Subscriber.objects.filter(pk=subscriber_id, email=email).select_related("topic").first()


@transaction.atomic
def subscriber_unsubscribe(*, subscriber: Subscriber, via: str = UnsubscribedVia.API) -> Subscriber:
    """Unsubscribe a subscriber from its topic: the topic's unsubscribe suppression, which marks
    the subscriber (the row is kept)."""
    topic = subscriber.topic
    subscribers_unsubscribe(subscribers=[subscriber], via=via)
    subscriber.refresh_from_db()
    subscriber.topic = topic
    return subscriber


def subscribers_unsubscribe(*, subscribers: Sequence[Subscriber], via: str) -> None:
    """Unsubscribe many subscribers (topics and clients loaded) with one suppressions INSERT,
    which marks them all in one UPDATE."""
    suppressions_add(
        entries=[
            NewSuppression(
                address=subscriber.email,
                reason=SuppressionReason.UNSUBSCRIBE,
                client=subscriber.topic.client,
                topic=subscriber.topic.slug,
                via=via,
            )
            for subscriber in subscribers
        ]
    )


# Service-wide suppressions that end every subscription of the address, and how they are shown.
_VIA_BY_REASON = {
    SuppressionReason.HARD_BOUNCE: UnsubscribedVia.BOUNCE,
    SuppressionReason.COMPLAINT: UnsubscribedVia.COMPLAINT,
}


def subscribers_unsubscribe_suppressed(*, entries: Sequence[NewSuppression]) -> int:
    """Mark unsubscribed the subscriptions new suppressions end, in one UPDATE per way: a
    topic's unsubscribe ends the subscription of that client's topic (`via` as the entry says,
    `admin` when it says nothing), a hard bounce or complaint every subscription of the address.

    Called by `suppressions_add` in its transaction; a subscriber already unsubscribed keeps
    when and how it left. Returns how many subscribers changed.
    """
    conditions: dict[str, list[Q]] = {}
    # A bounce batch may name hundreds of addresses: one IN list per reason, not an OR of them.
    service_wide: dict[str, list[str]] = {}
    for entry in entries:
        address = address_spec(entry.address)
        if entry.reason in _VIA_BY_REASON:
            service_wide.setdefault(_VIA_BY_REASON[entry.reason], []).append(address)
        elif entry.reason == SuppressionReason.UNSUBSCRIBE and entry.topic and entry.client:
            condition = Q(email=address, topic__client_id=entry.client.pk, topic__slug=entry.topic)
            conditions.setdefault(entry.via or UnsubscribedVia.ADMIN, []).append(condition)
    for via, addresses in service_wide.items():
        conditions.setdefault(via, []).append(Q(email__in=addresses))
    now = timezone.now()
    changed = 0
    for via, matches in conditions.items():
        changed += (
            Subscriber.objects.filter(functools.reduce(operator.or_, matches))
            .exclude(status=SubscriberStatus.UNSUBSCRIBED)
            .update(
                status=SubscriberStatus.UNSUBSCRIBED,
                unsubscribed_at=now,
                unsubscribed_via=via,
                updated_at=now,
            )
        )
    return changed


# The ways of leaving that a topic unsubscribe suppression records (bounces and complaints are
# service-wide suppressions of their own: removing a topic's entry does not undo them).
_TOPIC_UNSUBSCRIBE_VIAS = (
    UnsubscribedVia.API,
    UnsubscribedVia.LINK,
    UnsubscribedVia.ESP,
    UnsubscribedVia.ADMIN,
)


def subscribers_resume_unsuppressed(*, removed: Iterable[tuple[int, str, str]]) -> int:
    """Make active again the subscriptions whose topic unsubscribe suppressions were removed,
    given as (client id, topic, address); called by the suppression service in its transaction.
    Returns how many subscribers changed."""
    matches = [
        Q(topic__client_id=client_id, topic__slug=topic, email=address)
        for client_id, topic, address in removed
    ]
    if not matches:
        return 0
    return (
        Subscriber.objects.filter(functools.reduce(operator.or_, matches))
        .filter(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_via__in=_TOPIC_UNSUBSCRIBE_VIAS)
        .update(
            status=SubscriberStatus.ACTIVE,
            unsubscribed_at=None,
            unsubscribed_via="",
            updated_at=timezone.now(),
        )
    )


# --- Emails for a topic ---------------------------------------------------------------------


def topic_email_create(
    *,
    topic: Topic,
    subscriber: Subscriber,
    api_key: ApiKey | None = None,
    priority: str = Priority.DEFAULT,
    send_at: datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict | None = None,
    from_email: str | None = None,
) -> EmailJob:
    """One email of a topic to one active subscriber: the topic's template (its current
    version, pinned) or its own content rendered now, with the topic's context then the
    subscriber's; it carries the topic, so its unsubscribe link leaves that topic only."""
    if subscriber.topic_id != topic.pk:
        raise ValidationFailed(
            f"'{subscriber.email}' is not a subscriber of topic '{topic.slug}'.", field="subscriber"
        )
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise SubscriptionConflict(
            f"'{subscriber.email}' is {subscriber.status}: only active subscribers get the "
            f"emails of topic '{topic.slug}'.",
            field="subscriber",
        )
    context = {**topic.context, **subscriber.context}
    common = {
        "client": topic.client,
        "to": [subscriber.email],
        "api_key": api_key,
        "priority": priority,
        "send_at": send_at,
        "tags": tags,
        "metadata": metadata,
        "from_email": from_email,
        "topic": topic.slug,
    }
    if topic.template:
        # The worker renders the pinned version and adds `unsubscribe_url` itself.
        return email_create(template=topic.template, context=context, **common)
    # Own content is stored rendered, as an email with inline content is sent as it is: a later
    # change of the topic cannot reach it. Rendered as a schedule's run renders it.
    content = inline_content_render(
        subject=topic.subject,
        html=topic.html,
        text=topic.text,
        context=context,
        client_id=topic.client_id,
        address=subscriber.email,
        topic=topic.slug,
    )
    return email_create(
        subject=content.subject, html=content.html, text=content.text, context=context, **common
    )
