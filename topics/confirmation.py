"""Double opt-in: the signed token of a confirmation link and the link itself.

The token names the subscriber (its id and address), signed with the SECRET_KEY under its own
salt, and expires after MAILQUEUE_TOPICS_CONFIRM_MAX_AGE (a week by default): an old
confirmation request should not turn into a subscription months later.
"""

from dataclasses import dataclass

from django.core import signing
from django.urls import reverse

from mailqueue import conf as mailqueue_conf
from topics import conf
from topics.models import Subscriber

_SALT = "topics.confirm"


@dataclass(frozen=True)
class ConfirmToken:
    """What a confirmation link names: one subscriber, by id and address."""

    subscriber_id: int
    email: str


class BadConfirmToken(ValueError):
    """A confirmation token that is forged, altered, malformed or expired."""


def confirm_token_make(subscriber: Subscriber) -> str:
    """A URL-safe signed token for a subscriber's confirmation link."""
    return signing.dumps([subscriber.pk, subscriber.email], salt=_SALT)


def confirm_token_read(value: str) -> ConfirmToken:
    """The token's content; BadConfirmToken when it is forged, altered, malformed or expired."""
    try:
        subscriber_id, email = signing.loads(
            value, salt=_SALT, max_age=conf.confirm_max_age_seconds()
        )
        return ConfirmToken(subscriber_id=int(subscriber_id), email=str(email))
    except (signing.BadSignature, ValueError, TypeError):
        raise BadConfirmToken("No such confirmation link, or it has expired.") from None


def confirm_url(subscriber: Subscriber) -> str:
    """The public URL that confirms a pending subscriber."""
    path = reverse("topic-confirm", kwargs={"token": confirm_token_make(subscriber)})
    return f"{mailqueue_conf.public_url()}{path}"
