"""Checks on addresses and headers shared by the API serializers and the services."""

from email.utils import formataddr, getaddresses, parseaddr

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from mailqueue import conf
from mailqueue.errors import ValidationFailed

FORBIDDEN_CHARS = ("\r", "\n", "\0")

# Headers that the message builder or the provider owns; a sender may never set these.
RESERVED_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "sender",
    "return-path",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "received",
    "dkim-signature",
}


def has_forbidden_chars(value: str) -> bool:
    """Whether a header value contains CR, LF or NUL (header injection)."""
    return any(char in value for char in FORBIDDEN_CHARS)


def normalize_address(value: object, *, field: str) -> str:
    """Check one address (`a@b.c` or `Name <a@b.c>`) and return it in canonical form."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("Must be a non-empty email address string.", field=field)
    if has_forbidden_chars(value):
        raise ValidationFailed("Email addresses may not contain CR, LF or NUL.", field=field)
    parsed = getaddresses([value.strip()])
    if len(parsed) != 1 or not parsed[0][1]:
        raise ValidationFailed(
            f"'{value}' is not one valid email address (give one address per list item).",
            field=field,
        )
    name, addr = parsed[0]
    try:
        validate_email(addr)
    except ValidationError:
        raise ValidationFailed(f"'{value}' is not a valid email address.", field=field) from None
    return formataddr((name, addr)) if name else addr


def normalize_address_list(value: object, *, field: str) -> list[str]:
    """Accept one address or a list of addresses; return a list of canonical addresses."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValidationFailed("Must be an email address or a list of them.", field=field)
    return [normalize_address(item, field=f"{field}[{index}]") for index, item in enumerate(items)]


def address_spec(address: str) -> str:
    """The bare addr-spec of an address, lowercased (for indexing and search)."""
    return parseaddr(address)[1].lower()


def validate_headers(headers: object, *, field: str = "headers") -> dict[str, str]:
    """Check custom headers against the allow-list and for header injection."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise ValidationFailed("Must be an object of header names to string values.", field=field)
    allowed = conf.allowed_headers()
    clean: dict[str, str] = {}
    for name, value in headers.items():
        key = f"{field}.{name}"
        if not isinstance(name, str) or not name or has_forbidden_chars(name) or ":" in name:
            raise ValidationFailed("Invalid header name.", field=key)
        if not all(33 <= ord(char) <= 126 for char in name):
            raise ValidationFailed("Header names must be printable ASCII.", field=key)
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise ValidationFailed(
                f"'{name}' is set by Mailqueue and cannot be overridden.", field=key
            )
        if lowered not in allowed and not (conf.allow_x_headers() and lowered.startswith("x-")):
            raise ValidationFailed(f"Header '{name}' is not allowed.", field=key)
        if not isinstance(value, str):
            raise ValidationFailed("Header values must be strings.", field=key)
        if has_forbidden_chars(value):
            raise ValidationFailed("Header values may not contain CR, LF or NUL.", field=key)
        clean[name] = value
    return clean


def check_recipient_count(*, to: list, cc: list, bcc: list, field: str = "to") -> None:
    """Reject an email with more recipients than MAILQUEUE_MAX_RECIPIENTS."""
    total = len(to) + len(cc) + len(bcc)
    limit = conf.max_recipients()
    if total > limit:
        raise ValidationFailed(
            f"Too many recipients: {total} across to, cc and bcc (the limit is {limit}).",
            field=field,
        )
