"""Services: every write of the mailqueue app goes through one of these functions."""

from mailqueue.services.api_keys import (
    IssuedKey,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_update,
)
from mailqueue.services.delivery import DeliveryReport, emails_deliver, queue_drain
from mailqueue.services.emails import (
    AttachmentInput,
    BatchRecipient,
    BulkResult,
    attachment_decode,
    batch_create,
    captured_message_release,
    email_cancel,
    email_create,
    email_retry,
    emails_cancel_many,
    emails_retry_many,
    template_send_test,
)
from mailqueue.services.idempotency import (
    StoredResponse,
    idempotency_run,
    request_fingerprint,
)
from mailqueue.services.sweeper import SweepResult, emails_sweep

__all__ = [
    "AttachmentInput",
    "BatchRecipient",
    "BulkResult",
    "DeliveryReport",
    "IssuedKey",
    "StoredResponse",
    "SweepResult",
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "api_key_update",
    "attachment_decode",
    "batch_create",
    "captured_message_release",
    "email_cancel",
    "email_create",
    "email_retry",
    "emails_cancel_many",
    "emails_deliver",
    "emails_retry_many",
    "emails_sweep",
    "idempotency_run",
    "queue_drain",
    "request_fingerprint",
    "template_send_test",
]
