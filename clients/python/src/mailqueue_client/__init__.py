"""Python client for the Mailqueue API, and a Django email backend (`mailqueue_client.django`)."""

__version__ = "0.1.0"

from mailqueue_client.client import (
    Attachment,
    BatchRecipient,
    Mailqueue,
    Page,
    attachment,
)
from mailqueue_client.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    Conflict,
    IdempotencyMismatch,
    MailqueueConnectionError,
    MailqueueError,
    MailqueueTimeout,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    UnsupportedFeature,
    ValidationError,
)
from mailqueue_client.transport import RetryPolicy

__all__ = [
    "ApiError",
    "Attachment",
    "AuthenticationError",
    "BatchRecipient",
    "ConfigurationError",
    "Conflict",
    "IdempotencyMismatch",
    "Mailqueue",
    "MailqueueConnectionError",
    "MailqueueError",
    "MailqueueTimeout",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "UnsupportedFeature",
    "ValidationError",
    "attachment",
]
