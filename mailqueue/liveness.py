"""Which worker, scheduler and event consumer processes are alive, from their heartbeat keys.

Read by `GET /health/`, the admin dashboard and `manage.py mailqueue_healthcheck`; written by
RQ itself (workers), by `scheduler.MailqueueScheduler`, by the `consume_events` process
(`event_sends.consumer.EventConsumer`) and by `smtpd` (`mailqueue.smtpd.server`). Every probe
takes the Redis connection it asks, so this module depends on nothing else of Mailqueue's.
"""

from redis import Redis
from rq.worker_registration import REDIS_WORKER_KEYS

# A scheduler's key lives this long without a heartbeat: a killed scheduler stops counting as
# alive after this; a running one renews it every interval.
SCHEDULER_KEY_TTL_SECONDS = 30
# The set of every registered scheduler's key (the schedulers' `rq:workers`).
SCHEDULERS_KEY = "mailqueue:schedulers"
# The same for `consume_events` processes: each renews `<CONSUMERS_KEY>:<name>` every read
# (a read waits a few seconds at most), registered in the set CONSUMERS_KEY.
CONSUMER_KEY_TTL_SECONDS = 30
CONSUMERS_KEY = "mailqueue:event-consumers"
# The same for `smtpd` processes (renewed every third of the TTL).
SMTPD_KEY_TTL_SECONDS = 30
SMTPD_SERVERS_KEY = "mailqueue:smtpd-servers"


def live_workers_on_host(redis: Redis, hostname: str) -> int:
    """Live RQ workers running on one host (container health checks)."""
    hosts = _hostnames(redis, REDIS_WORKER_KEYS)
    return sum(1 for host in hosts.values() if host == hostname)


def live_scheduler_count(redis: Redis, *, hostname: str | None = None) -> int:
    """Running `rqscheduler` processes (on one host, if given): their heartbeat key exists."""
    return _live_count(redis, SCHEDULERS_KEY, hostname)


def live_consumer_count(redis: Redis, *, hostname: str | None = None) -> int:
    """Running `consume_events` processes (on one host, if given): their heartbeat key exists."""
    return _live_count(redis, CONSUMERS_KEY, hostname)


def live_smtpd_count(redis: Redis, *, hostname: str | None = None) -> int:
    """Running `smtpd` processes (on one host, if given): their heartbeat key exists."""
    return _live_count(redis, SMTPD_SERVERS_KEY, hostname)


def _live_count(redis: Redis, registry: str, hostname: str | None) -> int:
    """Processes of a registry set whose heartbeat key exists (on one host, if given); the
    registrations of killed ones, whose key expired, are dropped."""
    hosts = _hostnames(redis, registry)
    gone = [key for key, host in hosts.items() if host is None]
    if gone:
        redis.srem(registry, *gone)
    return sum(1 for host in hosts.values() if host is not None and hostname in (None, host))


def _hostnames(redis: Redis, registry: str) -> dict[bytes, str | None]:
    """Each process key registered in a set, with the host its hash names (None: key expired)."""
    keys = list(redis.smembers(registry))
    pipe = redis.pipeline()
    for key in keys:
        pipe.hget(key, "hostname")
    hosts = pipe.execute() if keys else []
    return {
        key: None if host is None else host.decode() for key, host in zip(keys, hosts, strict=True)
    }


def live_worker_count(redis: Redis) -> int:
    """RQ workers whose own key still exists: a killed worker's key expires, its registration
    in `rq:workers` does not."""
    keys = list(redis.smembers(REDIS_WORKER_KEYS))
    if not keys:
        return 0
    pipe = redis.pipeline()
    for key in keys:
        pipe.exists(key)
    return sum(pipe.execute())
