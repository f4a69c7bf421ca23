"""Mailqueue options, read from Django settings at call time (so tests can override them)."""

from django.conf import settings


def _get(name: str, default):
    return getattr(settings, name, default)


def providers() -> list[str]:
    """Ordered provider names from EMAIL_PROVIDERS; later ones take over during an outage."""
    value = _get("EMAIL_PROVIDERS", [])
    if isinstance(value, str):
        value = value.split(",")
    return [name.strip() for name in value if name.strip()]


def release_providers() -> list[str]:
    """Providers a captured message is released to: MAILQUEUE_RELEASE_PROVIDERS, or the real
    (non-capture, non-console) providers of EMAIL_PROVIDERS."""
    value = _get("MAILQUEUE_RELEASE_PROVIDERS", None)
    if value:
        names = value.split(",") if isinstance(value, str) else value
        return [name.strip() for name in names if name.strip()]
    return [name for name in providers() if name not in {"capture", "console"}]


def provider_cooldown_seconds() -> float:
    """How long a worker skips a provider after an outage (connection refused, timeout, 5xx)."""
    return float(_get("MAILQUEUE_PROVIDER_COOLDOWN_SECONDS", 30))


def smtp_settings() -> dict:
    """The `smtp` provider's settings (EMAIL_URL parsed by django-environ)."""
    return dict(_get("MAILQUEUE_SMTP", {}))


def smtp_timeout() -> float:
    """Seconds before an SMTP connect or command times out."""
    return float(_get("MAILQUEUE_SMTP_TIMEOUT", 30.0))


def max_attempts() -> int:
    """Delivery attempts before an email is failed for good."""
    return int(_get("MAILQUEUE_MAX_ATTEMPTS", 5))


def retry_base_seconds() -> float:
    """Base of the exponential backoff between attempts."""
    return float(_get("MAILQUEUE_RETRY_BASE_SECONDS", 30))


def retry_max_seconds() -> float:
    """Upper bound of one backoff delay."""
    return float(_get("MAILQUEUE_RETRY_MAX_SECONDS", 3600))


def batch_max() -> int:
    """Most recipients one batch request may carry."""
    return int(_get("MAILQUEUE_BATCH_MAX", 1000))


def batch_chunk_size() -> int:
    """Emails one delivery job claims at a time (a drain's chunk, a scheduled batch's job)."""
    return max(1, int(_get("MAILQUEUE_BATCH_CHUNK_SIZE", 100)))


def worker_concurrency() -> int:
    """Sends one worker process overlaps (threads, each with its own provider connections)."""
    return max(1, int(_get("MAILQUEUE_WORKER_CONCURRENCY", 8)))


def max_recipients() -> int:
    """Most addresses one email may have across to, cc and bcc."""
    return int(_get("MAILQUEUE_MAX_RECIPIENTS", 50))


def max_body_bytes() -> int:
    """Largest API request body accepted (413 above)."""
    return int(_get("MAILQUEUE_MAX_BODY_BYTES", 10 * 1024 * 1024))


def lease_seconds() -> int:
    """How long a worker may hold an email in `sending` before the sweeper takes it back."""
    return int(_get("MAILQUEUE_LEASE_SECONDS", 300))


def sweep_interval_seconds() -> float:
    """How often the scheduler process runs the sweeper."""
    return float(_get("MAILQUEUE_SWEEP_INTERVAL_SECONDS", 15))


def sweep_grace_seconds() -> float:
    """How late a queued, scheduled or retrying email must be before the sweeper re-enqueues it."""
    return float(_get("MAILQUEUE_SWEEP_GRACE_SECONDS", 30))


def idempotency_ttl_hours() -> int:
    """How long an Idempotency-Key is remembered."""
    return int(_get("MAILQUEUE_IDEMPOTENCY_TTL_HOURS", 24))


def api_throttle_rate() -> str | None:
    """Per-API-key request rate such as `100/s`, or None for no throttling."""
    return _get("MAILQUEUE_API_THROTTLE_RATE", None) or None


def allowed_headers() -> set[str]:
    """Custom header names (lowercased) a sender may set."""
    return {name.lower() for name in _get("MAILQUEUE_ALLOWED_HEADERS", [])}


def allow_x_headers() -> bool:
    """Whether any `X-` header may be set."""
    return bool(_get("MAILQUEUE_ALLOW_X_HEADERS", True))


def default_from_email() -> str:
    """Sender used when a request names none."""
    return _get("DEFAULT_FROM_EMAIL", "noreply@localhost")


def message_id_domain() -> str:
    """Domain of the Message-IDs we generate: the default sender's domain."""
    from email.utils import parseaddr

    address = parseaddr(default_from_email())[1]
    return address.rpartition("@")[2] or "localhost"
