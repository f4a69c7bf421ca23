"""Errors of event-driven sends; MailqueueError subclasses, so the API answers them as 4xx."""

from mailqueue.errors import MailqueueError


class EventRejected(MailqueueError, ValueError):
    """An event that can never become an email as it is (malformed, unknown client or type,
    no recipient, a template that refuses its context): it goes to the dead-letter stream."""


class EventRuleNotFound(MailqueueError, LookupError):
    """No such rule for the calling client (HTTP 404)."""

    status_code = 404
