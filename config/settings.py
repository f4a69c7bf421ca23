"""Django settings for Mailqueue.

Every environment variable the Django processes read is read here (12-factor). Mailqueue's own
options are only mapped here, when their variable is present: their defaults live in
``mailqueue/conf.py``, which the app reads at call time. README.md and .env.example list them all.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from mailqueue.priorities import QUEUE_NAMES, WEBHOOKS
from mailqueue.redis_config import (
    DEFAULT_SENTINEL_SERVICE,
    rq_connection_config,
    sentinel_addresses,
)

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is a convenience for local runs; real deployments set the environment.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str(
    "SECRET_KEY",
    default="insecure-dev-key-change-me" if DEBUG else "",
)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # mailqueue comes before django_rq so its `rqscheduler` command (short interval + sweeper)
    # overrides django-rq's.
    "mailqueue",
    "templates_app",
    "tracking",
    "client_webhooks",
    "event_sends",
    "topics",
    "schedules",
    "otp",
    "mailqueue.apps.MailqueueAdminConfig",  # django.contrib.admin with our AdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "anymail",
]

MIDDLEWARE = [
    # First: its request id and log line cover every answer, the 413s below included.
    "mailqueue.middleware.RequestLogMiddleware",
    "mailqueue.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "mailqueue.middleware.ContentSecurityPolicyMiddleware",
    # Serves the admin's and the API docs' static files from gunicorn (no separate web server).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and scheduler share one SQLite file under `make run`: WAL lets readers and
    # one writer work at once, and IMMEDIATE transactions wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # DATABASE_PGBOUNCER=1: DATABASE_URL is a PgBouncer in transaction mode, where consecutive
    # transactions of one connection may run on different server connections, so nothing may
    # outlive a transaction on the server: no server-side cursors (`.iterator()` would DECLARE
    # one WITH HOLD) and no prepared statements (psycopg prepares a query it ran five times;
    # PgBouncer < 1.21 cannot track them). Persistent connections to PgBouncer stay fine.
    if env.bool("DATABASE_PGBOUNCER", default=False):
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis configuration for every Redis user (queues, scheduler, metrics, circuit breakers, rate
# limits, streams, health): REDIS_URL (redis://[[user]:password@]host:port/db, or rediss:// with
# TLS options such as ?ssl_ca_certs=/path/ca.pem in its query string) and, behind Sentinel,
# REDIS_SENTINELS=host:port,... with REDIS_SENTINEL_SERVICE (the master's name) and
# REDIS_SENTINEL_PASSWORD (the sentinels' own, if they require one). mailqueue/redis_config.py.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_SENTINELS = sentinel_addresses(env.str("REDIS_SENTINELS", default=""))
REDIS_SENTINEL_SERVICE = env.str("REDIS_SENTINEL_SERVICE", default=DEFAULT_SENTINEL_SERVICE)
_REDIS_CONNECTION = rq_connection_config(
    REDIS_URL,
    sentinels=REDIS_SENTINELS,
    service=REDIS_SENTINEL_SERVICE,
    sentinel_password=env.str("REDIS_SENTINEL_PASSWORD", default=""),
)
RQ_QUEUES = {
    name: {**_REDIS_CONNECTION, "DEFAULT_TIMEOUT": 600} for name in (*QUEUE_NAMES, WEBHOOKS)
}
RQ = {
    # Workers run jobs in their own process (no fork per job) so SMTP/HTTP connections to
    # providers stay open across emails.
    "WORKER_CLASS": "mailqueue.worker.MailqueueWorker",
    "SCHEDULER_CLASS": "mailqueue.scheduler.MailqueueScheduler",
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# While developing (and in tests) whitenoise serves files straight from the apps.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files in production; plain files while developing.
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["mailqueue.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["mailqueue.api.parsers.StrictJSONParser"],
    # Escape non-ASCII in responses: an error message quoting odd input can never fail to encode.
    "UNICODE_JSON": False,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["mailqueue.throttling.ApiKeyRateThrottle"],
    "EXCEPTION_HANDLER": "mailqueue.api.exception_handler.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mailqueue API",
    "DESCRIPTION": "Self-hosted transactional email: send, schedule, batch and inspect emails.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Emails and topic subscribers both have a `status`: name each set (else a hashed name and
    # the drf_spectacular.W001 warning in `check --deploy`).
    "ENUM_NAME_OVERRIDES": {
        "EmailStatusEnum": "mailqueue.models.EmailStatus",
        "SubscriberStatusEnum": "topics.models.SubscriberStatus",
    },
}

# Messages (such as a new API key shown once in the admin) stay server-side, not in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# --- Email delivery and Mailqueue's options ---------------------------------------------------
# Django's own setting, so it keeps its default here (Django's would be webmaster@localhost).
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Mailqueue <noreply@localhost>")


def anymail_env_value(name: str, value: str) -> str | list[str]:
    """An ANYMAIL_* variable's value as anymail takes it: WEBHOOK_SECRET with commas is a list
    (`old:pw,new:pw` during a rotation), every other value the string itself."""
    if name == "WEBHOOK_SECRET" and "," in value:
        return [secret.strip() for secret in value.split(",") if secret.strip()]
    return value


# Every ANYMAIL_* variable becomes a key of anymail's settings dict (ANYMAIL_SENDGRID_API_KEY ->
# ANYMAIL["SENDGRID_API_KEY"]), so any ESP anymail supports is configured the same way.
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): anymail_env_value(key.removeprefix("ANYMAIL_"), value)
    for key, value in env.ENVIRON.items()
    if key.startswith("ANYMAIL_")
}

# Mailqueue's options: each setting is set only when its variable is present, so that its
# default is written once, in mailqueue/conf.py. Parsing the value here stops every process at
# startup on a malformed one.
_MAILQUEUE_VARIABLES = {
    "EMAIL_PROVIDERS": env.list,
    "MAILQUEUE_RELEASE_PROVIDERS": env.list,
    "MAILQUEUE_DKIM_KEYS": env.list,
    "MAILQUEUE_MAX_ATTEMPTS": env.int,
    "MAILQUEUE_RETRY_BASE_SECONDS": env.float,
    "MAILQUEUE_RETRY_MAX_SECONDS": env.float,
    "MAILQUEUE_BATCH_MAX": env.int,
    "MAILQUEUE_BATCH_CHUNK_SIZE": env.int,
    "MAILQUEUE_WORKER_CONCURRENCY": env.int,
    "MAILQUEUE_MAX_RECIPIENTS": env.int,
    "MAILQUEUE_MAX_BODY_BYTES": env.int,
    "MAILQUEUE_LEASE_SECONDS": env.int,
    "MAILQUEUE_PROVIDER_COOLDOWN_SECONDS": env.float,
    "MAILQUEUE_SWEEP_INTERVAL_SECONDS": env.float,
    "MAILQUEUE_SWEEP_GRACE_SECONDS": env.float,
    "MAILQUEUE_IDEMPOTENCY_TTL_HOURS": env.int,
    "MAILQUEUE_RETENTION_CONTENT_DAYS": env.int,
    "MAILQUEUE_RETENTION_DAYS": env.int,
    "MAILQUEUE_RETENTION_BATCH_SIZE": env.int,
    "MAILQUEUE_API_THROTTLE_RATE": env.str,
    "MAILQUEUE_ALLOWED_HEADERS": env.list,
    "MAILQUEUE_ALLOW_X_HEADERS": env.bool,
    "MAILQUEUE_SNS_TOPIC_ARNS": env.list,
    "MAILQUEUE_WEBHOOK_ALLOW_PRIVATE": env.bool,
    "MAILQUEUE_WEBHOOK_DISABLE_AFTER": env.int,
    "MAILQUEUE_UNSUBSCRIBE_MAILTO": env.str,
    "MAILQUEUE_PUBLIC_URL": env.str,
    "MAILQUEUE_TRACK_OPENS": env.bool,
    "MAILQUEUE_TRACK_CLICKS": env.bool,
    "MAILQUEUE_TRACK_STORE_IP": env.bool,
    "MAILQUEUE_METRICS_TOKEN": env.str,
    "MAILQUEUE_LOG_RECIPIENTS": env.bool,
    "MAILQUEUE_SENDER_DOMAINS_REQUIRED": env.bool,
    "MAILQUEUE_DNS_NAMESERVERS": env.list,
    "MAILQUEUE_DNS_TIMEOUT_SECONDS": env.float,
    "MAILQUEUE_ADMIN_LOGIN_FAILURES": env.int,
    "MAILQUEUE_ADMIN_LOGIN_WINDOW_SECONDS": env.int,
    "MAILQUEUE_TRUSTED_PROXIES": env.int,
    "MAILQUEUE_RATE_LIMITS": env.str,
    "MAILQUEUE_RATE_LIMIT_HIGH_RESERVE": env.float,
    "MAILQUEUE_BREAKER_FAILURES": env.int,
    "MAILQUEUE_BREAKER_WINDOW_SECONDS": env.float,
    "MAILQUEUE_SMTPD_HOST": env.str,
    "MAILQUEUE_SMTPD_PORT": env.int,
    "MAILQUEUE_SMTPD_TLS_CERT": env.str,
    "MAILQUEUE_SMTPD_TLS_KEY": env.str,
    "MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH": env.bool,
    "MAILQUEUE_SMTPD_MAX_MESSAGE_BYTES": env.int,
    "MAILQUEUE_SMTPD_MAX_RECIPIENTS": env.int,
    "MAILQUEUE_SMTPD_MAX_CONNECTIONS": env.int,
    # Template sandbox limits (templates_app/conf.py).
    "MAILQUEUE_TEMPLATE_RENDER_SECONDS": env.float,
    "MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS": env.int,
    # Event-driven sends (event_sends/conf.py).
    "MAILQUEUE_TOPICS_CONFIRM_MAX_AGE": env.int,
    "MAILQUEUE_TOPICS_CONFIRM_RESEND_SECONDS": env.int,
    "MAILQUEUE_EVENTS_STALE_CONSUMER_SECONDS": env.float,
    "MAILQUEUE_SCHEDULE_CHUNK_SIZE": env.int,
    "MAILQUEUE_SCHEDULE_EXPAND_SECONDS": env.float,
    "MAILQUEUE_SCHEDULE_MISSED_GRACE": env.int,
    "MAILQUEUE_SCHEDULE_RECIPIENTS_MAX": env.int,
    "MAILQUEUE_OTP_RESEND_SECONDS": env.int,
    "MAILQUEUE_OTP_MAX_CODES_PER_HOUR": env.int,
    "MAILQUEUE_OTP_MAX_ATTEMPTS": env.int,
    "MAILQUEUE_OTP_TEMPLATE": env.str,
    "MAILQUEUE_OTP_KEEP_HOURS": env.int,
    "MAILQUEUE_EVENTS_STREAM": env.str,
    "MAILQUEUE_EVENTS_GROUP": env.str,
    "MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS": env.float,
    "MAILQUEUE_EVENTS_BLOCK_SECONDS": env.float,
    "MAILQUEUE_EVENTS_BATCH_SIZE": env.int,
    "MAILQUEUE_EVENTS_MAX_DELIVERIES": env.int,
    "MAILQUEUE_EVENTS_DEAD_MAX_LEN": env.int,
    "MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS": env.int,
}
for _name, _parse in _MAILQUEUE_VARIABLES.items():
    if _name in env.ENVIRON:
        globals()[_name] = _parse(_name)
# The two variables of the `smtp` provider keep the names django-environ documents, but they
# configure only that provider, so their settings carry Mailqueue's prefix:
#   EMAIL_URL (smtp://, smtp+tls://, smtp+ssl://) -> MAILQUEUE_SMTP (a dict of EMAIL_* options)
#   EMAIL_TIMEOUT                                 -> MAILQUEUE_SMTP_TIMEOUT
if "EMAIL_URL" in env.ENVIRON:
    MAILQUEUE_SMTP = env.email_url("EMAIL_URL")
if "EMAIL_TIMEOUT" in env.ENVIRON:
    MAILQUEUE_SMTP_TIMEOUT = env.float("EMAIL_TIMEOUT")
# Django's body size limit is off: RequestBodyLimitMiddleware enforces MAILQUEUE_MAX_BODY_BYTES,
# read per request, with a 413 (Django's limit would answer 400 and ignore later overrides).
DATA_UPLOAD_MAX_MEMORY_SIZE = None

# LOG_FORMAT: json (one object per line, the default without DEBUG) or text (readable, the
# default with DEBUG, as under `make run`); mailqueue/logs.py writes both.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT = {LOG_FORMAT!r} is not valid: use 'json' or 'text'.")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"mailqueue": {"()": "mailqueue.logs.log_formatter", "name": LOG_FORMAT}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "mailqueue"},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler would print its lines a second time, in its format.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # runserver's access lines quote the raw path and query string (tokens of /u/ and /t/c/
        # links): mailqueue.requests writes one line per request with the route instead.
        "django.server": {"handlers": ["null"], "propagate": False},
        # SQL with its parameters carries addresses and content, and a failed variable lookup
        # quotes the template's whole context: neither is written, even at DEBUG.
        "django.db.backends": {"level": "WARNING"},
        "django.template": {"level": "INFO"},
        # A handler here keeps rq-scheduler from adding its own plain one (lines twice).
        "rq_scheduler.scheduler": {"handlers": ["console"], "propagate": False},
    },
}

# X-Content-Type-Options: nosniff, X-Frame-Options: DENY, Referrer-Policy: same-origin and
# Cross-Origin-Opener-Policy: same-origin are Django's defaults (SecurityMiddleware and
# XFrameOptionsMiddleware) in every mode; mailqueue.middleware adds the Content-Security-Policy.
# DENY keeps the previews working: they are srcdoc iframes, which load no URL of ours.
if not DEBUG:
    # TLS ends at the reverse proxy, which must set X-Forwarded-Proto (and overwrite a client's).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    # Sent only on HTTPS requests (SecurityMiddleware checks request.is_secure()), so a plain
    # HTTP setup (docker compose on localhost) never gets it. SECURE_HSTS_SECONDS=0 turns it off.
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # Off by default: the proxy in front usually redirects http:// itself, and docker compose
    # serves plain HTTP on localhost. With it on, the probes and Prometheus still reach the pods
    # over plain HTTP inside the network (their paths are exempt).
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
