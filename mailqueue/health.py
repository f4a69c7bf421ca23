"""GET /health/: database, Redis and live workers, for load balancers and operators."""

from importlib.metadata import PackageNotFoundError, version

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from mailqueue.liveness import live_worker_count
from mailqueue.scheduling import connection as redis_connection


def _version() -> str:
    try:
        return version("mailqueue")
    except PackageNotFoundError:
        return "unknown"


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}".strip()


def _check_redis() -> tuple[str, int | None]:
    try:
        redis = redis_connection()
        redis.ping()
        return "ok", live_worker_count(redis)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}".strip(), None


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL and Redis answer, 503 otherwise; `workers` counts live RQ workers."""
    database = _check_database()
    redis, workers = _check_redis()
    healthy = database == "ok" and redis == "ok"
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "version": _version(),
            "checks": {"database": database, "redis": redis, "workers": workers},
        },
        status=200 if healthy else 503,
    )
