"""Messages submitted over SMTP (`manage.py smtpd`) become emails of the key's client."""

import hashlib
import json
import logging
from dataclasses import asdict
from uuid import UUID

from mailqueue.errors import IdempotencyMismatch
from mailqueue.models import ApiKey
from mailqueue.services.emails import email_create
from mailqueue.services.idempotency import StoredResponse, idempotency_run
from mailqueue.smtpd.parsing import SubmittedEmail, message_parse

logger = logging.getLogger(__name__)

# Idempotency keys of SMTP submissions live beside the API's, in their own namespace.
KEY_PREFIX = "smtp:"


def _fingerprint(parsed: SubmittedEmail) -> str:
    """What the email is made of: the same message sent again matches even when its MIME
    boundaries were drawn anew (a message object re-serialized by the client)."""
    fields = asdict(parsed)
    fields["attachments"] = [
        [item.filename, item.mimetype, item.content_id, hashlib.sha256(item.content).hexdigest()]
        for item in parsed.attachments
    ]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _create(api_key: ApiKey, parsed: SubmittedEmail) -> UUID:
    email = email_create(
        client=api_key.client,
        api_key=api_key,
        to=parsed.to,
        cc=parsed.cc,
        bcc=parsed.bcc,
        reply_to=parsed.reply_to,
        from_email=parsed.from_email,
        subject=parsed.subject,
        html=parsed.html,
        text=parsed.text,
        priority=parsed.priority,
        tags=parsed.tags,
        metadata={"submitted_by": "smtp"},
        headers=parsed.headers,
        attachments=parsed.attachments,
    )
    return email.pk


def submission_accept(*, api_key: ApiKey, recipients: list[str], raw: bytes) -> tuple[UUID, bool]:
    """Store one submitted message as an email; return its id and whether it was a replay.

    A client that re-sends a message it already handed over (it lost our 250, or retried after
    a timeout) gets the first email's id back: the message's own Message-ID is its idempotency
    key. Raises ValidationFailed for a message the API would refuse, and DatabaseError when
    PostgreSQL is unreachable (nothing is stored: the SMTP client keeps the message and retries).
    """
    parsed = message_parse(raw=raw, recipients=recipients)
    if not parsed.message_id:
        return _create(api_key, parsed), False

    def work() -> StoredResponse:
        return StoredResponse(status=250, body={"id": str(_create(api_key, parsed))}, location="")

    try:
        answer, replayed = idempotency_run(
            client=api_key.client,
            key=f"{KEY_PREFIX}{parsed.message_id}"[:255],
            fingerprint=_fingerprint(parsed),
            work=work,
            test=api_key.is_test,
        )
    except IdempotencyMismatch:
        # Another message reused this Message-ID (a broken mail tool): accepting it as a new
        # email loses nothing, refusing it would.
        logger.warning("smtp submission: a Message-ID was reused for another message")
        return _create(api_key, parsed), False
    return UUID(answer.body["id"]), replayed
