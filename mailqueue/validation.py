"""Checks on addresses and headers shared by the API serializers and the services.

What goes into a mail header must stay on its line: CR, LF and NUL are refused, and so is every
other control character (vertical tab, form feed, the file/group/record separators, NEL) and the
Unicode line and paragraph separators, because Python's `email` package and many mail clients
split lines on those too. Tab is allowed (it is header whitespace).

Addresses: `a@b.c`, `Name <a@b.c>` and `"quoted local"@b.c` are accepted; an internationalized
domain (`x@bücher.de`) is stored in its ASCII (IDNA punycode) form, as the envelope and headers
carry it; a non-ASCII local part (`用户@例子.广告`, which needs SMTPUTF8) is refused.
"""

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import formataddr, getaddresses, parseaddr

from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email
from django.utils.encoding import punycode

from mailqueue import conf
from mailqueue.errors import ValidationFailed

# C0 controls but tab, DEL, C1 controls (NEL among them), U+2028 and U+2029.
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# An inline part's Content-ID: RFC 5322's dot-atom text on each side of an optional "@",
# nothing that could end the header.
CONTENT_ID_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+(@[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+)?$"
FORBIDDEN_DESCRIPTION = "control characters (CR, LF, NUL, ...) or line separators"
# `ada@example.com` or `Ada Lovelace <ada@example.com>`: every parser reads these the same way.
_SIMPLE_ADDRESS = re.compile(
    r"([A-Za-z0-9 ]+ <)?[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?(1)>)\Z"
)

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
    """Whether a header value contains a character that could end its line (header
    injection): CR, LF, NUL, any other control character but tab, U+2028 or U+2029."""
    return _FORBIDDEN.search(value) is not None


def _ascii_addr_spec(addr: str, *, value: str, field: str) -> str:
    """`addr` with its domain in IDNA (punycode) form; a non-ASCII local part is refused."""
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        raise ValidationFailed(
            f"'{value}': the part before the @ must be ASCII (addresses that need SMTPUTF8 "
            "are not supported).",
            field=field,
        )
    if domain.isascii():
        return addr
    try:
        return f"{local}@{punycode(domain)}"
    except UnicodeError:
        raise ValidationFailed(
            f"'{value}': the domain is not a valid internationalized domain name.", field=field
        ) from None


def _mailbox_key(addr_spec: str) -> tuple[str, str] | None:
    """The local part (unquoted) and lowercased domain of an addr-spec; None if unparsable."""
    try:
        address = Address(addr_spec=addr_spec)
    except (ValueError, IndexError, HeaderParseError):
        return None
    return address.username, address.domain.lower()


def normalize_address(value: object, *, field: str) -> str:
    """Check one address (`a@b.c`, `Name <a@b.c>`, `"quoted"@b.c`) and return it in canonical
    form: the display name quoted as needed, an internationalized domain in punycode."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("Must be a non-empty email address string.", field=field)
    if has_forbidden_chars(value):
        raise ValidationFailed(
            f"Email addresses may not contain {FORBIDDEN_DESCRIPTION}.", field=field
        )
    parsed = getaddresses([value.strip()])
    if len(parsed) != 1:
        raise ValidationFailed(
            f"'{value}' is not one valid email address (give one address per list item).",
            field=field,
        )
    if not parsed[0][1] or "@" not in parsed[0][1]:
        raise ValidationFailed(f"'{value}' is not a valid email address.", field=field)
    name, addr = parsed[0]
    addr = _ascii_addr_spec(addr, value=value, field=field)
    try:
        validate_email(addr)
    except ValidationError:
        if addr.startswith('"'):
            raise ValidationFailed(
                f"'{value}' is not a valid email address: a quoted local part may hold "
                "printable ASCII characters, but no spaces.",
                field=field,
            ) from None
        raise ValidationFailed(f"'{value}' is not a valid email address.", field=field) from None
    canonical = formataddr((name, addr)) if name else addr
    if _SIMPLE_ADDRESS.match(canonical):
        return canonical
    # What is stored must be what is sent: Django's message builder parses the address again
    # (strictly, RFC 5322); one it cannot parse, or reads as another mailbox, is refused now
    # rather than failing (or going elsewhere) in the worker.
    try:
        sent = sanitize_address(canonical, "utf-8")
    except (ValueError, IndexError):
        raise ValidationFailed(f"'{value}' is not a valid email address.", field=field) from None
    intended = _mailbox_key(addr)
    if intended is None or _mailbox_key(parseaddr(sent)[1]) != intended:
        raise ValidationFailed(
            f"'{value}' is ambiguous: it could be read as another address.", field=field
        )
    return canonical


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
            raise ValidationFailed(
                f"Header values may not contain {FORBIDDEN_DESCRIPTION}.", field=key
            )
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
