"""GET /health/: what load balancers and operators see about PostgreSQL, Redis and workers."""

import django_rq
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mailqueue.scheduling import connection as redis_connection
from tests.helpers import DOWN_REDIS


@pytest.mark.django_db
def test_healthy_service_answers_200(client):
    """With PostgreSQL and Redis up: 200, status ok, version and zero workers, no key needed."""
    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"]
    assert body["checks"] == {"database": "ok", "redis": "ok", "workers": 0}


@pytest.mark.django_db
def test_live_workers_are_counted(client):
    """A registered RQ worker shows up in `checks.workers`."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    try:
        body = client.get("/health/").json()
    finally:
        worker.register_death()

    assert body["checks"]["workers"] == 1


def test_killed_worker_is_not_counted(client):
    """A worker killed with -9 leaves its registration behind; once its key expires it is gone."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    redis_connection().delete(worker.key)  # what the key's expiry does after a kill -9

    body = client.get("/health/").json()

    assert body["checks"]["workers"] == 0


@pytest.mark.django_db
def test_redis_down_is_503_with_the_error(client, settings):
    """With Redis unreachable: 503, status unavailable, and the Redis error spelled out."""
    settings.RQ_QUEUES = DOWN_REDIS
    with pytest.raises(RedisConnectionError):
        redis_connection().ping()

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error:")
    assert "127.0.0.1:1" in body["checks"]["redis"]
    assert body["checks"]["workers"] is None


@pytest.mark.django_db
def test_health_recovers_when_redis_is_back(client, settings):
    """Connections are not cached across settings: pointing back at Redis answers 200 again."""
    working = settings.RQ_QUEUES
    settings.RQ_QUEUES = DOWN_REDIS
    assert client.get("/health/").status_code == 503

    settings.RQ_QUEUES = working

    assert client.get("/health/").status_code == 200


@pytest.mark.django_db
def test_health_is_never_cached(client):
    """Proxies must not serve a stale health answer."""
    response = client.get("/health/")

    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_health_only_answers_get(client):
    """POST /health/ is a 405."""
    assert client.post("/health/").status_code == 405
