"""Mailqueue's options: each one's setting name and default are written here and nowhere else.

`config/settings.py` only maps the environment: it sets an option's setting when its variable is
present, so an option nobody set falls back to the default below. Options are read at call time
(tests override them with pytest-django's `settings`) through `get_setting`, which names the
setting in an ImproperlyConfigured error when its value is unusable; the system check
mailqueue.E003 reads every option, so such a value stops `manage.py` commands at startup.
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from email.utils import parseaddr
from typing import Any, TypeVar

import environ
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")
_UNSET = object()


def get_setting(
    name: str, default: T, parse: Callable[[Any], T], *, minimum: float | None = None
) -> T:
    """Setting `name` read through `parse`, or `default` when it is not set at all.

    Raises ImproperlyConfigured naming the setting when `parse` refuses its value (TypeError or
    ValueError) or the value is below `minimum`.
    """
    value = getattr(settings, name, _UNSET)
    if value is _UNSET:
        return default
    try:
        parsed = parse(value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name} = {value!r} is not valid: {exc}") from exc
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name} = {value!r} is not valid: the minimum is {minimum}.")
    return parsed


def _names(value: str | Iterable[str]) -> list[str]:
    """A list of names from a list or a comma-separated string, blanks dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _boolean(value: object) -> bool:
    """True or False, refusing anything else (bool("0") would be True)."""
    if not isinstance(value, bool):
        raise TypeError("expected True or False")
    return value


def _mapping(value: object) -> dict:
    """A copy of a dict of options."""
    if not isinstance(value, Mapping):
        raise TypeError("expected a dict of options")
    return dict(value)


def _text_or_none(value: object) -> str | None:
    """The value as a string, or None for an empty one."""
    return str(value) if value else None


def providers() -> list[str]:
    """Ordered provider names from EMAIL_PROVIDERS; later ones take over during an outage.

    Default: the capture inbox while DEBUG is on, nothing otherwise (check mailqueue.E001).
    """
    return get_setting("EMAIL_PROVIDERS", ["capture"] if settings.DEBUG else [], _names)


def release_providers() -> list[str]:
    """Providers a captured message is released to: MAILQUEUE_RELEASE_PROVIDERS, or the real
    (non-capture, non-console) providers of EMAIL_PROVIDERS."""
    configured = get_setting("MAILQUEUE_RELEASE_PROVIDERS", [], _names)
    return configured or [
        name for name in providers() if name not in {"capture", "console", "simulator"}
    ]


def provider_cooldown_seconds() -> float:
    """How long a provider's circuit stays open (no call from any worker) before one half-open
    probe decides whether it closes."""
    return get_setting("MAILQUEUE_PROVIDER_COOLDOWN_SECONDS", 30.0, float, minimum=0)


def breaker_failures() -> int:
    """Transient failures of a provider within the window that open its circuit."""
    return get_setting("MAILQUEUE_BREAKER_FAILURES", 5, int, minimum=1)


def breaker_window_seconds() -> float:
    """The sliding window in which a provider's transient failures are counted."""
    return get_setting("MAILQUEUE_BREAKER_WINDOW_SECONDS", 30.0, float, minimum=0.001)


def smtp_settings() -> dict:
    """The `smtp` provider's EMAIL_* options, as django-environ parses the EMAIL_URL variable."""
    default = environ.Env.email_url_config("smtp://localhost:25")
    return get_setting("MAILQUEUE_SMTP", default, _mapping)


def dkim_keys() -> list[str]:
    """DKIM keys of the smtp provider, `domain:selector:/path/to/key.pem` each."""
    return get_setting("MAILQUEUE_DKIM_KEYS", [], _names)


def smtp_timeout() -> float:
    """Seconds before an SMTP connect or command times out (the EMAIL_TIMEOUT variable)."""
    return get_setting("MAILQUEUE_SMTP_TIMEOUT", 30.0, float, minimum=0)


def max_attempts() -> int:
    """Delivery attempts before an email is failed for good."""
    return get_setting("MAILQUEUE_MAX_ATTEMPTS", 5, int, minimum=1)


def retry_base_seconds() -> float:
    """Base of the exponential backoff between attempts."""
    return get_setting("MAILQUEUE_RETRY_BASE_SECONDS", 30.0, float, minimum=0)


def retry_max_seconds() -> float:
    """Upper bound of one backoff delay."""
    return get_setting("MAILQUEUE_RETRY_MAX_SECONDS", 3600.0, float, minimum=0)


def batch_max() -> int:
    """Most recipients one batch request may carry."""
    return get_setting("MAILQUEUE_BATCH_MAX", 1000, int, minimum=1)


def batch_chunk_size() -> int:
    """Emails one delivery job claims at a time (a drain's chunk, a scheduled batch's job)."""
    return get_setting("MAILQUEUE_BATCH_CHUNK_SIZE", 100, int, minimum=1)


def worker_concurrency() -> int:
    """Sends one worker process overlaps (threads, each with its own provider connections)."""
    return get_setting("MAILQUEUE_WORKER_CONCURRENCY", 8, int, minimum=1)


def max_recipients() -> int:
    """Most addresses one email may have across to, cc and bcc."""
    return get_setting("MAILQUEUE_MAX_RECIPIENTS", 50, int, minimum=1)


def max_body_bytes() -> int:
    """Largest request body accepted (413 above)."""
    return get_setting("MAILQUEUE_MAX_BODY_BYTES", 10 * 1024 * 1024, int, minimum=1)


# --- SMTP submission (`manage.py smtpd`, mailqueue/smtpd/) ------------------------------------
def smtpd_host() -> str:
    """Address the SMTP submission server listens on."""
    return get_setting("MAILQUEUE_SMTPD_HOST", "0.0.0.0", str)  # noqa: S104 (a server's job)


def smtpd_port() -> int:
    """Port of the SMTP submission server."""
    return get_setting("MAILQUEUE_SMTPD_PORT", 2525, int, minimum=0)


def smtpd_tls_cert() -> str:
    """PEM certificate (chain) file offered with STARTTLS; "" for no TLS."""
    return get_setting("MAILQUEUE_SMTPD_TLS_CERT", "", str)


def smtpd_tls_key() -> str:
    """PEM private key file of MAILQUEUE_SMTPD_TLS_CERT."""
    return get_setting("MAILQUEUE_SMTPD_TLS_KEY", "", str)


def smtpd_allow_plain_auth() -> bool:
    """Allow AUTH (an API key as the password) over an unencrypted connection: local use only."""
    return get_setting("MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH", False, _boolean)


def smtpd_max_message_bytes() -> int:
    """Largest message accepted (552 above); also announced in EHLO's SIZE."""
    return get_setting("MAILQUEUE_SMTPD_MAX_MESSAGE_BYTES", 10 * 1024 * 1024, int, minimum=1)


def smtpd_max_recipients() -> int:
    """Most RCPT TO per message (452 for more); no more than MAILQUEUE_MAX_RECIPIENTS counts."""
    return min(get_setting("MAILQUEUE_SMTPD_MAX_RECIPIENTS", 50, int, minimum=1), max_recipients())


def smtpd_max_connections() -> int:
    """Open connections one server process serves at once (421 to the next)."""
    return get_setting("MAILQUEUE_SMTPD_MAX_CONNECTIONS", 100, int, minimum=1)


def lease_seconds() -> int:
    """How long a worker may hold an email in `sending` before the sweeper takes it back."""
    return get_setting("MAILQUEUE_LEASE_SECONDS", 300, int, minimum=1)


def sweep_interval_seconds() -> float:
    """How often the scheduler process runs the sweeper."""
    return get_setting("MAILQUEUE_SWEEP_INTERVAL_SECONDS", 15.0, float, minimum=0)


def sweep_grace_seconds() -> float:
    """How late a queued, scheduled or retrying email must be before the sweeper re-enqueues it."""
    return get_setting("MAILQUEUE_SWEEP_GRACE_SECONDS", 30.0, float, minimum=0)


def idempotency_ttl_hours() -> int:
    """How long an Idempotency-Key is remembered."""
    return get_setting("MAILQUEUE_IDEMPOTENCY_TTL_HOURS", 24, int, minimum=0)


def retention_content_days() -> int | None:
    """Days after which finished emails lose their bodies, context and attachments; None: off."""
    return get_setting("MAILQUEUE_RETENTION_CONTENT_DAYS", None, _days_or_none)


def retention_days() -> int | None:
    """Days after which finished emails are deleted with their attempts and events; None: off."""
    return get_setting("MAILQUEUE_RETENTION_DAYS", None, _days_or_none)


def retention_batch_size() -> int:
    """Rows each retention statement touches, each batch in its own short transaction."""
    return get_setting("MAILQUEUE_RETENTION_BATCH_SIZE", 1000, int, minimum=1)


def _days_or_none(value: object) -> int | None:
    """A positive number of days, or None (off) for None, 0 or an empty string."""
    if value in (None, "", 0, "0"):
        return None
    days = int(value)
    if days < 1:
        raise ValueError("expected a positive number of days, or 0 for off")
    return days


def api_throttle_rate() -> str | None:
    """Per-API-key request rate such as `100/s`, or None for no throttling."""
    return get_setting("MAILQUEUE_API_THROTTLE_RATE", None, _throttle_rate)


def _throttle_rate(value: object) -> str | None:
    """`N/s`, `N/min`, `N/hour` or `N/day` (DRF's format: the unit's first letter counts), or
    None for an empty value; refused here rather than as a 500 on the first request."""
    rate = _text_or_none(value)
    if rate is None:
        return None
    count, _, unit = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or unit.strip()[:1] not in set("smhd"):
        raise ValueError("expected a rate such as 100/s or 6000/min")
    return rate


# --- Shared rate limits (mailqueue/rate_limits.py) ------------------------------------------


def _rate_limits(value: object) -> dict:
    # Here, not at the top: rate_limits.py reads this module.
    from mailqueue.rate_limits import rate_limits_parse

    return rate_limits_parse(value)


def rate_limits() -> dict:
    """Sending limits by provider name or `domain:<recipient domain>`, from a text such as
    `amazon_ses=14/s:28, domain:gmail.com=20/s` (N/s or N/min, burst after the colon, default
    1); empty (the default): no limits, and no Redis call for them."""
    return get_setting("MAILQUEUE_RATE_LIMITS", {}, _rate_limits)


def _fraction(value: object) -> float:
    """A number from 0 to 1."""
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("expected a fraction from 0 to 1")
    return number


def rate_limit_high_reserve() -> float:
    """Fraction of each limit's burst that only `high` emails may use: `default` and `low` ones
    wait while the bucket holds less than this."""
    return get_setting("MAILQUEUE_RATE_LIMIT_HIGH_RESERVE", 0.2, _fraction)


def allowed_headers() -> set[str]:
    """Custom header names (lowercased) a sender may set."""
    default = [
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
        "In-Reply-To",
        "References",
        "Auto-Submitted",
        "Precedence",
        "X-Entity-Ref-ID",
    ]
    return {name.lower() for name in get_setting("MAILQUEUE_ALLOWED_HEADERS", default, _names)}


def allow_x_headers() -> bool:
    """Whether any `X-` header may be set besides the allowed ones."""
    return get_setting("MAILQUEUE_ALLOW_X_HEADERS", True, _boolean)


def _public_url(value: object) -> str:
    """An absolute http(s) base URL without its trailing slash."""
    url = str(value).strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ValueError("expected an absolute http:// or https:// URL")
    return url


def public_url() -> str:
    """Base URL recipients reach this service at (tracking pixels and links, unsubscribe links),
    without a trailing slash."""
    return get_setting("MAILQUEUE_PUBLIC_URL", "http://localhost:8000", _public_url)


def track_opens() -> bool:
    """Whether emails track opens when neither the request nor the template says."""
    return get_setting("MAILQUEUE_TRACK_OPENS", False, _boolean)


def track_clicks() -> bool:
    """Whether emails track clicks when neither the request nor the template says."""
    return get_setting("MAILQUEUE_TRACK_CLICKS", False, _boolean)


def track_store_ip() -> bool:
    """Whether open and click events keep the client's IP address (off: privacy by default)."""
    return get_setting("MAILQUEUE_TRACK_STORE_IP", False, _boolean)


def metrics_token() -> str:
    """Bearer token `GET /metrics` requires; empty (the default): the endpoint is open, for a
    Prometheus on a private network."""
    return get_setting("MAILQUEUE_METRICS_TOKEN", "", str)


def log_recipients() -> bool:
    """Whether log lines may name recipient addresses (off: logs carry ids, never addresses)."""
    return get_setting("MAILQUEUE_LOG_RECIPIENTS", False, _boolean)


def _mailto(value: object) -> str:
    """A bare email address (no mailto: prefix), or "" for none."""
    address = str(value or "").strip().removeprefix("mailto:")
    if address and (parseaddr(address)[1] != address or "@" not in address):
        raise ValueError("expected one bare email address such as unsubscribe@example.com")
    return address


def unsubscribe_mailto() -> str:
    """Address whose mailbox handles unsubscribe emails, added to List-Unsubscribe as a
    `<mailto:...>`; empty (the default): only the one-click https link is offered."""
    return get_setting("MAILQUEUE_UNSUBSCRIBE_MAILTO", "", _mailto)


def webhook_allow_private() -> bool:
    """Whether outbound webhooks may use plain http and private, loopback or link-local
    addresses (development and tests only: off, they must be https to a public address)."""
    return get_setting("MAILQUEUE_WEBHOOK_ALLOW_PRIVATE", False, _boolean)


def webhook_disable_after() -> int:
    """Failed webhook attempts in a row after which an endpoint is disabled."""
    return get_setting("MAILQUEUE_WEBHOOK_DISABLE_AFTER", 20, int, minimum=1)


def sns_topic_arns() -> list[str]:
    """Amazon SNS topics whose notifications the SES webhook accepts; empty (the default)
    refuses every SNS message, since anyone can point their own topic at the URL."""
    return get_setting("MAILQUEUE_SNS_TOPIC_ARNS", [], _names)


def default_from_email() -> str:
    """Sender used when a request names none: Django's DEFAULT_FROM_EMAIL."""
    # A Django setting, so it always has a value: its default is in config/settings.py.
    return settings.DEFAULT_FROM_EMAIL


def message_id_domain() -> str:
    """Domain of the Message-IDs we generate: the default sender's domain."""
    address = parseaddr(default_from_email())[1]
    return address.rpartition("@")[2] or "localhost"


# --- Sender domains (mailqueue/services/sender_domains.py) ---------------------------------


def sender_domains_required() -> bool:
    """Whether every from_email and reply_to must be on one of the client's verified sender
    domains (off only for a single-tenant install that trusts every key)."""
    return get_setting("MAILQUEUE_SENDER_DOMAINS_REQUIRED", True, _boolean)


def _nameservers(value: object) -> list[tuple[str, int]]:
    """(IP address, port) pairs from `ip`, `ip:port` or `[ipv6]:port` items."""
    servers = []
    for item in _names(value):
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        servers.append((str(ipaddress.ip_address(host)), int(port)))
    return servers


def dns_nameservers() -> list[tuple[str, int]]:
    """Nameservers that answer sender-domain TXT lookups; empty: the system's resolvers."""
    return get_setting("MAILQUEUE_DNS_NAMESERVERS", [], _nameservers)


def dns_timeout_seconds() -> float:
    """How long one sender-domain verification waits for DNS in all."""
    return get_setting("MAILQUEUE_DNS_TIMEOUT_SECONDS", 5.0, float, minimum=0.1)


# --- Admin login (mailqueue/security.py) -------------------------------------------------------
def admin_login_failures() -> int:
    """Failed admin logins from one client IP, or for one username, that block further tries
    (429) until the window ends."""
    return get_setting("MAILQUEUE_ADMIN_LOGIN_FAILURES", 5, int, minimum=1)


def admin_login_window_seconds() -> int:
    """Seconds failed admin logins are counted over, from the first one (a fixed window)."""
    return get_setting("MAILQUEUE_ADMIN_LOGIN_WINDOW_SECONDS", 900, int, minimum=1)


def trusted_proxies() -> int:
    """Reverse proxies in front of the web process that append the client's address to
    X-Forwarded-For; 0 (the default): the client is REMOTE_ADDR and X-Forwarded-For is ignored."""
    return get_setting("MAILQUEUE_TRUSTED_PROXIES", 0, int, minimum=0)
