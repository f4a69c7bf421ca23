"""Test settings: real PostgreSQL and Redis, each test run on its own database and Redis DB."""

import atexit
import os
import uuid

import environ
import redis

from config.settings import *  # noqa: F403
from config.settings import env

DEBUG = False
SECRET_KEY = "test-secret-key"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
EMAIL_PROVIDERS = ["capture"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A unique database name per test process: pytest-django prefixes it with test_ and xdist
# workers each import this module, so parallel runs (and parallel checkouts) never collide.
_run_id = uuid.uuid4().hex[:8]
DATABASES = {
    "default": {
        **environ.Env.db_url_config(
            env.str("TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/postgres")
        ),
        "NAME": f"mailqueue_{_run_id}",
        "CONN_MAX_AGE": 0,
    }
}
DATABASES["default"]["TEST"] = {"NAME": f"test_mailqueue_{_run_id}"}

# Claim a free Redis DB number (1-12) for this process; DB 15 holds the claims, DB 0 is left to
# `make run` and DB 13 to the benchmarks. A claim expires on its own if the process dies.
_REDIS_BASE = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379")
_locks = redis.Redis.from_url(f"{_REDIS_BASE}/15")
_owner = f"{os.getpid()}-{_run_id}"
TEST_REDIS_DB = None
for _number in range(1, 13):
    if _locks.set(f"mailqueue-test-db:{_number}", _owner, nx=True, ex=3 * 3600):
        TEST_REDIS_DB = _number
        break
if TEST_REDIS_DB is None:
    raise RuntimeError("No free Redis DB (1-12) for tests: too many test runs at once?")


def _release_redis_db() -> None:
    key = f"mailqueue-test-db:{TEST_REDIS_DB}"
    if _locks.get(key) == _owner.encode():
        _locks.delete(key)


atexit.register(_release_redis_db)

REDIS_URL = f"{_REDIS_BASE}/{TEST_REDIS_DB}"
RQ_QUEUES = {
    name: {**config, "URL": REDIS_URL}
    for name, config in RQ_QUEUES.items()  # noqa: F405
}
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = True
# No collectstatic before tests: serve static files without the hashed manifest.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
