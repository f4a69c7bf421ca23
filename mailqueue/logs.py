"""Structured log lines: the JSON and text formatters, request and job context, and the two
lines Mailqueue writes on purpose (one per email outcome, one per HTTP request).

Every line carries `timestamp`, `level`, `logger`, `message` and `event` (`log` for a line that
names none); the context fields below appear only when known: an absent field is omitted, never
null. `request_id` and `job_id` come from the record when it names them, otherwise from the
context of the web request or RQ job running in this thread.

Log lines never name recipients, subjects, bodies, contexts or secrets: the lines written here
carry ids only, and as a second line of defence the formatters replace anything shaped like an
email address in a message or traceback with `<redacted>` unless MAILQUEUE_LOG_RECIPIENTS is on.
"""

import json
import logging
import re
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from mailqueue import conf

if TYPE_CHECKING:
    from mailqueue.services.outcomes import Decision

# A line's context fields come as one dict, `extra={"event": ..., "log_fields": {...}}` (one
# attribute to read per line, not one per field): email_id, batch_id, attempt, provider,
# duration_ms, outcome, error_class, recipient (only with MAILQUEUE_LOG_RECIPIENTS on), method,
# route, status, client_id, request_id, job_id.
REDACTED = "<redacted>"

_request_id: ContextVar[str] = ContextVar("mailqueue_request_id", default="")
_job_id: ContextVar[str] = ContextVar("mailqueue_job_id", default="")

# A request id a caller may choose: short, and safe to echo in a header and a log line.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Deliberately loose (anything@anything without spaces or brackets): it also catches an SMTP
# reply's `<bob@example.com>` and user@host credentials in a URL. Over-redacting is harmless.
_ADDRESS = re.compile(r"[^\s<>@\"'(),;:\[\]]+@[^\s<>@\"'(),;:\[\]]+")

outcome_logger = logging.getLogger("mailqueue.outcomes")
request_logger = logging.getLogger("mailqueue.requests")


def request_id_accept(value: str | None) -> str:
    """The caller's X-Request-ID when it is 1-128 of [A-Za-z0-9._:-], else a new uuid4 hex."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id of the web request this thread is serving, or "" outside a request."""
    return _request_id.get()


def request_id_set(value: str) -> object:
    """Make `value` the current request id; returns the token `request_id_reset` takes."""
    return _request_id.set(value)


def request_id_reset(token: object) -> None:
    """Restore the request id in force before `request_id_set`."""
    _request_id.reset(token)


def job_id_set(value: str) -> object:
    """Make `value` the current RQ job id; returns the token `job_id_reset` takes."""
    return _job_id.set(value)


def job_id_reset(token: object) -> None:
    """Restore the job id in force before `job_id_set`."""
    _job_id.reset(token)


def redact(text: str) -> str:
    """`text` with email addresses replaced by <redacted>, unless MAILQUEUE_LOG_RECIPIENTS is on."""
    # The `in` test keeps the cost of a line without an "@" (nearly all of them) to a scan.
    if "@" not in text or conf.log_recipients():
        return text
    return _ADDRESS.sub(REDACTED, text)


def request_route(request: HttpRequest) -> str:
    """The URL pattern a request matched (never its path, which may carry a token)."""
    match = getattr(request, "resolver_match", None)
    return f"/{match.route}" if match is not None and match.route else "(unmatched)"


def _message(record: logging.LogRecord) -> str:
    """The record's message, with a request path replaced by its route, redacted."""
    message = record.getMessage()
    # Django's own request loggers (django.request, django.security.*) quote the raw path.
    path = getattr(getattr(record, "request", None), "path", None)
    if path and isinstance(path, str) and path in message:
        message = message.replace(path, request_route(record.request))
    return redact(message)


def _context(record: logging.LogRecord) -> dict:
    """The context fields known for a record: its own, then the thread's request and job ids."""
    given = getattr(record, "log_fields", None)
    fields = {k: v for k, v in given.items() if v is not None and v != ""} if given else {}
    if "request_id" not in fields:
        # Django logs a 4xx/5xx answer (django.request) after the middleware has returned.
        request_id = getattr(getattr(record, "request", None), "request_id", None)
        if request_id := request_id or _request_id.get():
            fields["request_id"] = request_id
    if "job_id" not in fields and (job_id := _job_id.get()):
        fields["job_id"] = job_id
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; a traceback goes in `exception`, newlines escaped."""
        line = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "event": getattr(record, "event", None) or "log",
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines (LOG_FORMAT=text): time, level, logger, message, then key=value context."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The readable line, with the event and the context fields appended."""
        record.message = _message(record)
        line = super().formatMessage(record)
        event = getattr(record, "event", None)
        context = " ".join(f"{name}={value}" for name, value in _context(record).items())
        return " ".join(part for part in (line, event and f"event={event}", context) if part)

    def formatException(self, ei) -> str:
        """The traceback, redacted."""
        return redact(super().formatException(ei))


def outcomes_log(*, decisions: Sequence["Decision"], statuses: Sequence[str]) -> None:
    """Write one `email.outcome` line per recorded decision (nothing below INFO).

    `duration_ms` runs from the claim (which sets the email's `updated_at`) to now, just after
    the outcome was written; `attempt` is the email's attempt count with this outcome; `job_id`
    is the job that claimed the email; `recipient` only with MAILQUEUE_LOG_RECIPIENTS on.
    """
    if not outcome_logger.isEnabledFor(logging.INFO):
        return
    now = timezone.now()
    with_recipient = conf.log_recipients()
    for decision, status in zip(decisions, statuses, strict=True):
        email = decision.email
        tries = decision.tries
        provider = decision.fields.get("provider") or (tries[-1].provider if tries else None)
        claimed_at = email.updated_at
        duration_ms = int((now - claimed_at).total_seconds() * 1000) if claimed_at else None
        outcome_logger.info(
            "email %s",
            status,
            extra={
                "event": "email.outcome",
                "log_fields": {
                    "email_id": str(email.pk),
                    "batch_id": str(email.batch_id) if email.batch_id else None,
                    "attempt": decision.fields.get("attempts", email.attempts),
                    "provider": provider,
                    "duration_ms": duration_ms,
                    "outcome": status,
                    "error_class": decision.fields.get("error_class"),
                    "request_id": email.request_id,
                    "job_id": email.rq_job_id,
                    "recipient": email.recipient if with_recipient else None,
                },
            },
        )


def request_log(
    *, request: HttpRequest, response: HttpResponse, duration_ms: int, request_id: str
) -> None:
    """Write the `http.request` line of one request: method, route, status, time, client."""
    if not request_logger.isEnabledFor(logging.INFO):
        return
    route = request_route(request)
    # DRF sets `auth` on the Django request too; an API key's client, never the key itself.
    client_id = getattr(getattr(request, "auth", None), "client_id", None)
    request_logger.info(
        "%s %s %s",
        request.method,
        route,
        response.status_code,
        extra={
            "event": "http.request",
            "log_fields": {
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "client_id": client_id,
                "request_id": request_id,
            },
        },
    )


def log_formatter(name: str) -> logging.Formatter:
    """The formatter LOG_FORMAT names: json or text (ValueError for anything else)."""
    formatters = {"json": JsonFormatter, "text": TextFormatter}
    if name not in formatters:
        raise ValueError(f"LOG_FORMAT = {name!r} is not valid: use 'json' or 'text'.")
    return formatters[name]()
