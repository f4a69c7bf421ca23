"""A submitted MIME message as the fields of a Mailqueue email.

SMTP tools hand over a finished message; the service stores its parts (text, HTML, attachments,
inline images) and rebuilds the message at delivery, with its own Message-ID, DKIM signature and
unsubscribe headers. The envelope decides who receives it: recipients named in To/Cc stay
there, every other envelope recipient becomes a Bcc, and an address only in the headers gets
nothing (as with any SMTP server).
"""

import re
from dataclasses import dataclass, field
from email import policy
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

from mailqueue import conf
from mailqueue.errors import ValidationFailed
from mailqueue.models import Priority
from mailqueue.services.emails import AttachmentInput
from mailqueue.validation import (
    CONTENT_ID_PATTERN,
    FORBIDDEN_DESCRIPTION,
    has_forbidden_chars,
    normalize_address,
    normalize_address_list,
    validate_headers,
)

# The API's limits (mailqueue/api/serializers.py and the columns they protect).
MAX_SUBJECT_LENGTH = 998
MAX_TAGS = 50
MAX_TAG_LENGTH = 100
MAX_NAME_LENGTH = 255
PRIORITY_HEADER = "X-Mailqueue-Priority"
TAGS_HEADER = "X-Mailqueue-Tags"
# Headers the message itself is made of: rebuilt (or replaced) at delivery, never copied.
_STRUCTURAL = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "sender",
    "return-path",
    "received",
    PRIORITY_HEADER.lower(),
    TAGS_HEADER.lower(),
}


@dataclass
class SubmittedEmail:
    """What `email_create` needs from one submitted message."""

    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    from_email: str | None = None
    reply_to: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentInput] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    priority: str = Priority.DEFAULT
    tags: list[str] = field(default_factory=list)
    # The client's own Message-ID: the key that makes a re-sent message a replay.
    message_id: str = ""


def _addresses(message: EmailMessage, name: str) -> list[str]:
    """The addresses of one header (all of its occurrences), as `Name <addr>` strings; groups
    without members (`undisclosed-recipients:;`, what mail programs write for Bcc-only mail)
    give none."""
    values = [str(value) for value in message.get_all(name) or []]
    found = []
    for display, spec in getaddresses(values):
        if not spec:
            continue
        if has_forbidden_chars(display):
            raise ValidationFailed(
                f"A display name in {name} may not contain {FORBIDDEN_DESCRIPTION}.", field=name
            )
        found.append(str(Address(display_name=display, addr_spec=spec)) if display else spec)
    return found


def _spec(address: str) -> str:
    """The bare, lowercased addr-spec of `Name <addr>` or `addr` ("" if there is none)."""
    pairs = getaddresses([address])
    return pairs[0][1].lower() if pairs else ""


def _unique(addresses: list[str], seen: set[str]) -> list[str]:
    """The addresses not seen yet (by lowercased addr-spec), in order; marks them seen."""
    kept = []
    for address in addresses:
        spec = _spec(address)
        if spec and spec not in seen:
            seen.add(spec)
            kept.append(address)
    return kept


def _priority(message: EmailMessage) -> str:
    value = str(message.get(PRIORITY_HEADER, "") or "").strip().lower()
    if not value:
        return Priority.DEFAULT
    if value not in Priority.values:
        raise ValidationFailed(
            f"{PRIORITY_HEADER} must be one of {', '.join(Priority.values)}, not {value!r}.",
            field=PRIORITY_HEADER,
        )
    return value


def _tags(message: EmailMessage) -> list[str]:
    """The tags of X-Mailqueue-Tags, held to the API's limits (50 tags of 100 characters)."""
    value = str(message.get(TAGS_HEADER, "") or "")
    tags = [tag.strip() for tag in value.split(",") if tag.strip()]
    if len(tags) > MAX_TAGS or any(len(tag) > MAX_TAG_LENGTH for tag in tags):
        raise ValidationFailed(
            f"{TAGS_HEADER}: at most {MAX_TAGS} tags of {MAX_TAG_LENGTH} characters.",
            field=TAGS_HEADER,
        )
    return tags


def _attachment(part: EmailMessage, content_id: str, disposition: str | None) -> AttachmentInput:
    """One attachment or inline part, held to the API's rules (a name and a Content-ID that stay
    on their header line)."""
    filename = part.get_filename() or content_id or "attachment"
    mimetype = part.get_content_type()
    if has_forbidden_chars(filename) or len(filename) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            f"An attachment's file name must be one line of at most {MAX_NAME_LENGTH} characters.",
            field="attachment",
        )
    if len(mimetype) > MAX_NAME_LENGTH:
        raise ValidationFailed("An attachment's content type is too long.", field="attachment")
    inline_id = content_id if disposition != "attachment" else ""
    if inline_id and not re.match(CONTENT_ID_PATTERN, inline_id):
        raise ValidationFailed(
            f"An inline part's Content-ID must look like logo@example.com: {inline_id[:80]!r}.",
            field="Content-ID",
        )
    return AttachmentInput(
        filename=filename,
        content=part.get_payload(decode=True) or b"",
        mimetype=mimetype,
        content_id=inline_id,
    )


def _body_parts(message: EmailMessage) -> tuple[str | None, str | None, list[AttachmentInput]]:
    """The first text and HTML bodies, and every attachment or inline part with a Content-ID."""
    text = html = None
    attachments: list[AttachmentInput] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        content_id = str(part.get("Content-ID", "") or "").strip().strip("<>")
        is_body = disposition != "attachment" and not content_id
        if is_body and content_type == "text/plain" and text is None:
            text = part.get_content()
        elif is_body and content_type == "text/html" and html is None:
            html = part.get_content()
        elif disposition in ("attachment", "inline") or content_id or part.get_filename():
            attachments.append(_attachment(part, content_id, disposition))
    return text, html, attachments


def _extra_headers(message: EmailMessage) -> dict[str, str]:
    """Headers on the allow-list (MAILQUEUE_ALLOWED_HEADERS, X-* if allowed); the rest of what
    mail programs add (User-Agent, X-Mailer, ...) is dropped, not refused."""
    allowed, x_headers = conf.allowed_headers(), conf.allow_x_headers()
    kept: dict[str, str] = {}
    for name, value in message.items():
        lowered = name.lower()
        if lowered in _STRUCTURAL:
            continue
        if lowered in allowed or (x_headers and lowered.startswith("x-")):
            kept[name] = str(value)
    return kept


def message_parse(*, raw: bytes, recipients: list[str]) -> SubmittedEmail:
    """Parse a submitted message; `recipients` (the envelope's RCPT TO) decide who gets it.

    Raises ValidationFailed for a message the API would refuse, or one that cannot be read (an
    unknown charset, a broken header): the SMTP server answers 554, as retrying cannot help.
    """
    try:
        return _parse(raw, recipients)
    except ValidationFailed:
        raise
    except (LookupError, ValueError, IndexError, TypeError, MessageError) as exc:
        raise ValidationFailed(
            f"The message cannot be read: {type(exc).__name__}: {str(exc)[:200]}", field="message"
        ) from None


def _parse(raw: bytes, recipients: list[str]) -> SubmittedEmail:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    header_to, header_cc = _addresses(message, "To"), _addresses(message, "Cc")
    envelope = {address.lower(): address for address in recipients}
    seen: set[str] = set()
    to = _unique([address for address in header_to if _spec(address) in envelope], seen)
    cc = _unique([address for address in header_cc if _spec(address) in envelope], seen)
    bcc = _unique([address for spec, address in envelope.items() if spec not in seen], seen)
    if not to:
        # A message whose To names none of the envelope recipients (a Bcc-only send): the first
        # recipient becomes To, so every email has one, as the API requires.
        to, bcc = ([cc.pop(0)], bcc) if cc else ([bcc[0]], bcc[1:])
    senders = _addresses(message, "From")
    subject = str(message.get("Subject", "") or "")
    if has_forbidden_chars(subject) or len(subject) > MAX_SUBJECT_LENGTH:
        raise ValidationFailed(
            f"The subject must be one line of at most {MAX_SUBJECT_LENGTH} characters.",
            field="Subject",
        )
    text, html, attachments = _body_parts(message)
    # The same checks as the API's: a message the API would refuse is refused here too.
    return SubmittedEmail(
        to=normalize_address_list(to, field="To"),
        cc=normalize_address_list(cc, field="Cc"),
        bcc=normalize_address_list(bcc, field="RCPT TO"),
        from_email=normalize_address(senders[0], field="From") if senders else None,
        reply_to=normalize_address_list(_addresses(message, "Reply-To"), field="Reply-To"),
        subject=subject,
        text=text,
        html=html,
        attachments=attachments,
        headers=validate_headers(_extra_headers(message)),
        priority=_priority(message),
        tags=_tags(message),
        message_id=str(message.get("Message-ID", "") or "").strip(),
    )
