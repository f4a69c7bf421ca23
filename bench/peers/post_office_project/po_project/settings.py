"""Settings of the post_office peer: its own scratch PostgreSQL database, the shared SMTP sink.

Configured as a post_office user would for throughput: BATCH_SIZE 1000 (default 100), the
default 5 threads per process, the default log level (a Log row per sent email, like
Mailqueue's attempt rows). Templates render on delivery, as Mailqueue's do.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
# The repository root, so `bench.lib.workload` (plain Python) is importable here too.
sys.path.insert(0, str(BASE_DIR.parent.parent.parent))

_db = urlsplit(
    os.environ.get("BENCH_PO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/post_office_bench")
)

SECRET_KEY = "bench"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "post_office",
    "po_bench",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "PASSWORD": _db.password or "",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": _db.port or 5432,
        "CONN_MAX_AGE": 60,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("BENCH_SMTP_PORT", "25"))
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = "Bench <bench@example.com>"

POST_OFFICE = {"BATCH_SIZE": 1000}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
