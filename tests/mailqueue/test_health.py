"""GET /health/, /health/live/ and /health/ready/: what load balancers, orchestrators and
operators see about PostgreSQL, Redis, workers and providers."""

import socket
import time
from datetime import datetime

import django_rq
import pytest
from django.db import connection
from redis.exceptions import ConnectionError as RedisConnectionError

from mailqueue.models import ApiKey
from mailqueue.providers import get_provider, providers_in_service
from mailqueue.providers.breaker import CALL, REFRESH_SECONDS, ProviderBreakers, breakers
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import api_key_create
from tests.helpers import DOWN_REDIS


@pytest.fixture
def live_worker():
    """One registered RQ worker, as a running `rqworker` has."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    yield worker
    worker.register_death()


@pytest.fixture
def database_down():
    """The default connection points at a port nothing listens on (a real refused connection)."""
    original = connection.settings_dict["PORT"]
    connection.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection.settings_dict["PORT"] = port
    host = connection.settings_dict["HOST"]
    connection.settings_dict["HOST"] = "127.0.0.1"
    yield
    connection.close()
    connection.settings_dict["PORT"], connection.settings_dict["HOST"] = original, host


@pytest.mark.django_db
def test_healthy_service_answers_200_with_every_field(client, settings, live_worker):
    """PostgreSQL, Redis, a live worker and a usable provider: 200 `healthy`, no key needed."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]

    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["version"]
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["uptime"]["seconds"] >= 0
    assert body["uptime"]["human"].endswith("s")
    assert body["queue"] == "connected"
    assert body["database"] == "connected"
    closed = {"state": "closed", "seconds_left": 0, "recent_failures": 0, "probing": False}
    assert body["providers"] == {
        "smtp": {"state": "healthy", "circuit": closed},
        "capture": {"state": "healthy", "circuit": closed},
    }
    assert body["checks"] == {"database": "ok", "redis": "ok", "workers": 1, "smtpd": 0}


@pytest.mark.django_db
def test_no_live_worker_is_degraded_but_200(client):
    """Without a worker nothing is sent, but the API still takes email: `degraded`, 200."""
    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["workers"] == 0


def test_killed_worker_is_not_counted(client):
    """A worker killed with -9 leaves its registration behind; once its key expires it is gone."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    redis_connection().delete(worker.key)  # what the key's expiry does after a kill -9

    body = client.get("/health/").json()

    assert body["checks"]["workers"] == 0


@pytest.mark.django_db
def test_redis_down_is_degraded_and_anonymous_callers_see_only_the_error_class(client, settings):
    """Redis unreachable: 200 `degraded` (the outbox still takes email); no host in the answer."""
    settings.RQ_QUEUES = DOWN_REDIS
    with pytest.raises(RedisConnectionError):
        redis_connection().ping()

    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["queue"] == "ConnectionError"
    assert body["database"] == "connected"
    assert body["checks"] == {
        "database": "ok",
        "redis": "error: ConnectionError",
        "workers": None,
        "smtpd": None,
    }
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_admin_keys_and_staff_see_the_error_text(client, admin_client, settings):
    """Operators (an `admin` API key, a staff session) read the error itself; other keys don't."""
    admin_key = api_key_create(client_name="ops", scopes=[ApiKey.Scope.ADMIN])
    send_key = api_key_create(client_name="acme", scopes=[ApiKey.Scope.SEND])
    settings.RQ_QUEUES = DOWN_REDIS

    as_admin = client.get("/health/", HTTP_AUTHORIZATION=f"Bearer {admin_key.plaintext}").json()
    as_staff = admin_client.get("/health/").json()
    as_sender = client.get("/health/", HTTP_AUTHORIZATION=f"Bearer {send_key.plaintext}").json()

    assert "127.0.0.1:1" in as_admin["checks"]["redis"]
    assert "127.0.0.1:1" in as_staff["checks"]["redis"]
    assert as_sender["checks"]["redis"] == "error: ConnectionError"
    assert as_admin["queue"] == "ConnectionError"  # the field itself is the same for everyone


@pytest.mark.django_db
def test_health_recovers_when_redis_is_back(client, settings, live_worker):
    """Connections are not cached across settings: pointing back at Redis is `healthy` again."""
    working = settings.RQ_QUEUES
    settings.RQ_QUEUES = DOWN_REDIS
    assert client.get("/health/").json()["status"] == "degraded"

    settings.RQ_QUEUES = working

    assert client.get("/health/").json()["status"] == "healthy"


@pytest.mark.django_db
def test_provider_circuit_opened_by_another_process_shows_with_seconds_left(
    client, settings, live_worker
):
    """A circuit a worker opened is seen by the web process (through Redis): `degraded`, with
    the circuit's state, seconds left and the failures that opened it."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30
    settings.MAILQUEUE_BREAKER_FAILURES = 2
    worker = ProviderBreakers()  # another process: this one knows nothing of it
    worker.record_failure("capture", CALL)
    worker.record_failure("smtp", CALL)
    worker.record_failure("smtp", CALL)

    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["providers"]["capture"] == {
        "state": "healthy",
        "circuit": {"state": "closed", "seconds_left": 0, "recent_failures": 1, "probing": False},
    }
    smtp = body["providers"]["smtp"]
    assert smtp["state"] == "circuit_open"
    assert smtp["circuit"]["state"] == "open"
    assert 25 < smtp["circuit"]["seconds_left"] <= 30
    assert smtp["circuit"]["recent_failures"] == 2


@pytest.mark.django_db
def test_provider_circuit_half_open_shows_while_its_probe_runs(client, settings, live_worker):
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 0.2
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    worker = ProviderBreakers()
    worker.record_failure("smtp", CALL)
    time.sleep(0.25)
    assert worker.permit("smtp").probe

    smtp = client.get("/health/").json()["providers"]["smtp"]

    assert smtp["state"] == "circuit_half_open"
    assert smtp["circuit"]["state"] == "half_open"
    assert smtp["circuit"]["probing"] is True


@pytest.mark.django_db
def test_provider_without_its_credentials_is_unconfigured(client, settings, live_worker):
    """An ESP named in EMAIL_PROVIDERS without its API key: `unconfigured`, `degraded`."""
    settings.EMAIL_PROVIDERS = ["postmark", "capture"]
    settings.ANYMAIL = {}

    body = client.get("/health/").json()

    assert body["providers"]["postmark"]["state"] == "unconfigured"
    assert body["status"] == "degraded"


@pytest.mark.django_db(transaction=True)
def test_database_down_is_unhealthy_503_without_the_host(client, database_down):
    """PostgreSQL unreachable: 503 `unhealthy`, the error's class only; not ready either."""
    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["database"] == "OperationalError"
    assert body["checks"]["database"] == "error: OperationalError"
    assert "127.0.0.1" not in response.content.decode()
    ready = client.get("/health/ready/")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unready", "database": "OperationalError"}
    assert client.get("/health/live/").status_code == 200


@pytest.mark.django_db
def test_ready_when_the_database_answers_even_with_redis_down(client, settings):
    """Redis down does not make the web process unready: the outbox takes the email."""
    settings.RQ_QUEUES = DOWN_REDIS

    response = client.get("/health/ready/")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "connected"}


def test_live_answers_without_touching_the_database_or_redis(client, settings):
    """No database access is allowed here (no django_db mark) and Redis is down: still 200."""
    settings.RQ_QUEUES = DOWN_REDIS

    response = client.get("/health/live/")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/", "/health/live/", "/health/ready/"])
def test_health_is_never_cached_and_only_answers_get(client, path):
    """Proxies must not serve a stale answer; POST is a 405."""
    assert "no-cache" in client.get(path)["Cache-Control"]
    assert client.post(path).status_code == 405


def test_workers_see_a_circuit_opened_elsewhere_within_a_second_without_asking_per_email(
    settings,
):
    """A worker reads the shared circuits at most once a second, not once per email: a circuit
    another process opens reaches it on the next refresh."""
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 30
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    smtp = get_provider("smtp")
    assert providers_in_service([smtp]) == [smtp]  # reads Redis once: the circuit is closed

    ProviderBreakers().record_failure("smtp", CALL)  # another worker process: only Redis knows

    assert providers_in_service([smtp]) == [smtp]  # this copy is fresh: Redis was not asked
    time.sleep(REFRESH_SECONDS + 0.1)
    assert providers_in_service([smtp]) == []


def test_a_successful_probe_closes_the_circuit_for_every_process(settings):
    """A provider that works again is back in service everywhere, not only where it worked."""
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 0.2
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    smtp = get_provider("smtp")
    prober = ProviderBreakers()
    prober.record_failure("smtp", CALL)
    assert providers_in_service([smtp]) == []
    time.sleep(0.25)
    probe = prober.permit("smtp")

    prober.record_success("smtp", probe)

    assert breakers.states(["smtp"])["smtp"].state == "closed"
    time.sleep(REFRESH_SECONDS + 0.1)
    assert providers_in_service([smtp]) == [smtp]
