"""Grouping failed emails by the shape of their error, so operators act on causes, not rows."""

import hashlib
import re

# Parts of an error message that differ between emails failing for the same reason. SMTP reply
# codes (550, 4.3.0) are kept: they are the reason.
_VARIABLE_PARTS = (
    (re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+"), "<address>"),
    (
        re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I),
        "<id>",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"\b\d{4,}\b"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def error_pattern(message: str) -> str:
    """The message with addresses, ids, times and long numbers replaced by placeholders."""
    pattern = message.strip()
    for regex, placeholder in _VARIABLE_PARTS:
        pattern = regex.sub(placeholder, pattern)
    return pattern[:500]


def error_group_key(*, error_class: str, message: str) -> str:
    """A short stable key of (error class, message pattern): one dead-letter group."""
    digest = hashlib.sha256(f"{error_class}\n{error_pattern(message)}".encode())
    return digest.hexdigest()[:32]


def error_fields(*, error_class: str, message: str) -> dict:
    """An email's error columns, written together so they always describe one error and its
    dead-letter group (an empty message clears all three)."""
    if not message:
        return {"last_error": "", "error_class": "", "error_group": ""}
    return {
        "last_error": message[:5000],
        "error_class": error_class[:200],
        "error_group": error_group_key(error_class=error_class, message=message),
    }
