"""Health probes: `GET /health/` for operators and load balancers, `/health/live/` and
`/health/ready/` for orchestrators.

`/health/` is `unhealthy` (503) only when PostgreSQL does not answer: with Redis down the
outbox still takes email and the sweeper enqueues it later, so that, like no live worker or a
provider whose circuit breaker is open or half-open, is `degraded` (200). Error texts can name
hosts, so anonymous callers see only an error's class; staff users and `admin` API keys see
the text.
"""

import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError
from rest_framework.authentication import get_authorization_header

from mailqueue import conf
from mailqueue.errors import MailqueueError
from mailqueue.liveness import live_smtpd_count, live_worker_count
from mailqueue.models import ApiKey
from mailqueue.providers import CircuitState, provider_class, providers_circuits
from mailqueue.providers.breaker import CLOSED
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import api_key_authenticate

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
CONNECTED = "connected"
# Imported from MailqueueConfig.ready(), so this is (close to) the process's start.
PROCESS_STARTED = time.monotonic()


def _version() -> str:
    try:
        return version("mailqueue")
    except PackageNotFoundError:
        return "unknown"


def _error_text(exc: Exception, *, detailed: bool) -> str:
    """`error: <class>`, plus the message for trusted callers."""
    if detailed:
        return f"error: {type(exc).__name__}: {exc}".strip()
    return f"error: {type(exc).__name__}"


def _check_database() -> Exception | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure to answer is the state we report
        return exc
    return None


def _check_redis() -> tuple[Exception | None, int | None, dict[str, CircuitState], int | None]:
    """Redis's error (or None), the live workers, the providers' circuits it holds and the live
    SMTP submission servers."""
    try:
        redis = redis_connection()
        redis.ping()
        return (
            None,
            live_worker_count(redis),
            providers_circuits(names=conf.providers()),
            live_smtpd_count(redis),
        )
    except (RedisError, OSError) as exc:
        return exc, None, {}, None


def _provider_configured(name: str) -> bool:
    """Whether the provider's class exists and, for an ESP, its credentials build a backend."""
    try:
        provider_class(name)(name).check_configured()
    except MailqueueError:
        return False
    return True


def _providers(circuits: dict[str, CircuitState]) -> dict[str, dict]:
    """Each configured provider's state (healthy, unconfigured, circuit_open or
    circuit_half_open) and its circuit breaker (left out while Redis cannot be read)."""
    states = {}
    for name in conf.providers():
        circuit = circuits.get(name)
        if not _provider_configured(name):
            state = "unconfigured"
        elif circuit is not None and circuit.state != CLOSED:
            state = f"circuit_{circuit.state}"
        else:
            state = "healthy"
        states[name] = {"state": state}
        if circuit is not None:
            states[name]["circuit"] = {
                "state": circuit.state,
                "seconds_left": round(circuit.seconds_left, 1),
                "recent_failures": circuit.recent_failures,
                "probing": circuit.probing,
            }
    return states


def _human(seconds: int) -> str:
    """`3d 4h 5m 6s`, leading zero units left out."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    shown = [f"{value}{unit}" for value, unit in parts if value] + [f"{secs}s"]
    return " ".join(shown)


def _trusted(request: HttpRequest) -> bool:
    """Staff users and `admin` API keys may read error texts (they can name hosts)."""
    try:
        if request.user.is_authenticated and request.user.is_staff:
            return True
        header = get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != b"bearer":
            return False
        api_key = api_key_authenticate(token=header[1].decode())
    except (DatabaseError, UnicodeDecodeError):
        return False  # PostgreSQL down (sessions and keys live there) or a garbled header
    return api_key is not None and ApiKey.Scope.ADMIN in api_key.scopes


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The service's state: 200 when healthy or degraded, 503 when PostgreSQL is unreachable."""
    database_error = _check_database()
    redis_error, workers, circuits, smtpd_servers = _check_redis()
    providers = _providers(circuits)
    if database_error is not None:
        status = UNHEALTHY
    elif (
        redis_error is not None
        or not workers
        or any(state["state"] != "healthy" for state in providers.values())
    ):
        status = DEGRADED
    else:
        status = HEALTHY
    detailed = database_error is None and _trusted(request)
    uptime = int(time.monotonic() - PROCESS_STARTED)
    return JsonResponse(
        {
            "status": status,
            "timestamp": datetime.now(UTC).isoformat(),
            "version": _version(),
            "uptime": {"seconds": uptime, "human": _human(uptime)},
            "queue": type(redis_error).__name__ if redis_error else CONNECTED,
            "database": type(database_error).__name__ if database_error else CONNECTED,
            "providers": providers,
            "checks": {
                "database": _error_text(database_error, detailed=detailed)
                if database_error
                else "ok",
                "redis": _error_text(redis_error, detailed=detailed) if redis_error else "ok",
                "workers": workers,
                # SMTP submission servers (`manage.py smtpd`): optional, so not part of status.
                "smtpd": smtpd_servers,
            },
        },
        status=503 if status == UNHEALTHY else 200,
    )


@never_cache
@require_GET
def health_live(request: HttpRequest) -> JsonResponse:
    """200 as long as this process answers: no database or Redis call."""
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def health_ready(request: HttpRequest) -> JsonResponse:
    """200 when this web process can accept email (PostgreSQL answers), 503 otherwise; Redis
    being down does not count, since the outbox keeps the email for the sweeper."""
    database_error = _check_database()
    if database_error is not None:
        return JsonResponse(
            {"status": "unready", "database": type(database_error).__name__}, status=503
        )
    return JsonResponse({"status": "ready", "database": CONNECTED})
