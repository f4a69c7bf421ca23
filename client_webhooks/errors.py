"""Errors of outbound webhooks; MailqueueError subclasses, so the API answers them as 4xx."""

from mailqueue.errors import MailqueueError, ValidationFailed


class UnsafeWebhookUrl(ValidationFailed):
    """A webhook URL is malformed, not https, or resolves to an address we must not call."""


class WebhookEndpointNotFound(MailqueueError, LookupError):
    """No such endpoint for the calling client (HTTP 404)."""

    status_code = 404
