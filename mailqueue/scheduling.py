"""Everything that puts delivery jobs into Redis: now, at a time, or never again (cancel).

Two kinds of job deliver email:

- a *drain* job per priority (`drain_queue(priority)`) claims the oldest queued emails of its
  priority from PostgreSQL, a chunk at a time. Accepting an email only asks for a drain
  (`drains_request`): a marker key per priority says one is already pending, so a busy API
  costs one `SET NX` per request instead of one RQ job per email;
- an *id* job (`deliver_emails(ids)`) delivers named emails at a time: scheduled sends and
  retries, released by the scheduler process.

Services put jobs into Redis and ask about them only through this module; RQ's other touch
points are the worker class (worker.py), the scheduler process (scheduler.py) and the tasks the
jobs name (tasks.py). PostgreSQL stays the source of truth: losing what is in Redis only delays
emails until the sweeper (run by the scheduler process) puts them back.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_rq.queues import DjangoScheduler
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

from mailqueue.liveness import live_worker_count
from mailqueue.models import Priority
from mailqueue.redis_config import redis_client

logger = logging.getLogger(__name__)

# More commands for the same round trip (the accepted emails' metrics counters): a request that
# enqueues its emails pays no Redis round trip of its own for them.
AlsoQueue = Callable[[Pipeline], None] | None

DELIVER_FUNC = "mailqueue.tasks.deliver_emails"
DRAIN_FUNC = "mailqueue.tasks.drain_queue"
JOB_TIMEOUT_SECONDS = 900
RESULT_TTL_SECONDS = 600
FAILURE_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class DeliveryJob:
    """One RQ job that delivers one or more emails."""

    job_id: str
    email_ids: tuple[str, ...]
    priority: str
    run_at: datetime | None = None


def email_job_id(email_id: UUID) -> str:
    """A new RQ job id for a job of one email (RQ ids allow only [A-Za-z0-9_-]).

    New on every call: a job enqueued while another job of the same email runs (a reschedule)
    must not share its id, or RQ would mark the new job finished when the old one ends.
    """
    return f"{email_job_prefix(email_id)}{uuid4().hex[:12]}"


def email_job_prefix(email_id: UUID) -> str:
    """What every job id of one email's own jobs starts with."""
    return f"email-{email_id.hex}-"


# Seconds a Redis command may take before it fails. Enqueueing runs at the end of API requests
# (and after each retry and sweep): a Redis that accepts connections but stalls must fail them
# quickly (the email is already safe in PostgreSQL; the sweeper enqueues it later), not hang
# them. Workers block on their queues through RQ's own connection, which this does not touch.
COMMAND_TIMEOUT_SECONDS = 5
_clients: dict[tuple[str, float, float], Redis] = {}


def connection(*, timeout: float | None = None, connect_timeout: float | None = None) -> Redis:
    """The Redis the queues live in, with short timeouts (one client per configuration,
    timeouts and process). `timeout` is a command's (COMMAND_TIMEOUT_SECONDS unless given); the
    connection's is the same unless given.

    Built from RQ_QUEUES like the workers' own connection (mailqueue/redis_config.py), so
    REDIS_URL's password and TLS options and Sentinel apply to every caller alike.
    """
    config = settings.RQ_QUEUES["default"]
    timeout = COMMAND_TIMEOUT_SECONDS if timeout is None else timeout
    connect_timeout = timeout if connect_timeout is None else connect_timeout
    # repr covers every option (a test's override_settings gets a client of its own).
    key = (repr(sorted(config.items())), timeout, connect_timeout)
    client = _clients.get(key)
    if client is None:
        client = redis_client(
            config, socket_timeout=timeout, socket_connect_timeout=connect_timeout
        )
        _clients[key] = client
    return client


def deliveries_enqueue(jobs: Iterable[DeliveryJob], *, also: AlsoQueue = None) -> None:
    """Put jobs on their priority queues, or in the scheduler for a later time, in one round trip.

    Raises RedisError if Redis is unreachable.
    """
    jobs = list(jobs)
    if not jobs:
        return
    redis = connection()
    now = timezone.now()
    pipe = redis.pipeline()
    due: dict[str, list] = {}
    scheduler = None
    for job in jobs:
        kwargs = {
            "args": (list(job.email_ids),),
            "job_id": job.job_id,
            "timeout": JOB_TIMEOUT_SECONDS,
            "result_ttl": RESULT_TTL_SECONDS,
            "failure_ttl": FAILURE_TTL_SECONDS,
            "description": f"deliver {len(job.email_ids)} email(s)",
        }
        if job.run_at is None or job.run_at <= now:
            due.setdefault(job.priority, []).append(
                django_rq.get_queue(job.priority, connection=redis).prepare_data(
                    DELIVER_FUNC, **kwargs
                )
            )
        else:
            scheduler = scheduler or get_scheduler(connection=redis)
            rq_job = scheduler._create_job(
                DELIVER_FUNC,
                args=kwargs["args"],
                id=job.job_id,
                timeout=JOB_TIMEOUT_SECONDS,
                result_ttl=RESULT_TTL_SECONDS,
                description=kwargs["description"],
                queue_name=job.priority,
                commit=False,
            )
            rq_job.save(pipeline=pipe)
            # The exact time, to the microsecond: MailqueueScheduler compares with the exact
            # time too (stock rq-scheduler truncates both to whole seconds).
            pipe.zadd(scheduler.scheduled_jobs_key, {job.job_id: job.run_at.timestamp()})
    for priority, datas in due.items():
        django_rq.get_queue(priority, connection=redis).enqueue_many(datas, pipeline=pipe)
    if also is not None:
        also(pipe)
    pipe.execute()


def deliveries_enqueue_on_commit(jobs: Iterable[DeliveryJob], *, also: AlsoQueue = None) -> None:
    """Enqueue after the current transaction commits; if Redis is down, leave it to the sweeper."""
    jobs = list(jobs)

    def _enqueue() -> None:
        try:
            deliveries_enqueue(jobs, also=also)
        except RedisError as exc:
            # The emails are safe in PostgreSQL; the sweeper enqueues them once Redis is back.
            logger.warning(
                "enqueue of %d job(s) failed, the sweeper will retry: %s", len(jobs), exc
            )

    transaction.on_commit(_enqueue)


def delivery_jobs_cancel(job_ids: Iterable[str]) -> None:
    """Drop jobs from the scheduler and delete them, in one round trip (best effort).

    A deleted job still listed in a queue is skipped by workers; and a worker that runs a job
    anyway re-checks each email's status, so a job left behind sends nothing.
    """
    job_ids = [job_id for job_id in job_ids if job_id]
    if not job_ids:
        return
    try:
        pipe = connection().pipeline()
        pipe.zrem(get_scheduler().scheduled_jobs_key, *job_ids)
        pipe.delete(*(Job.key_for(job_id) for job_id in job_ids))
        pipe.execute()
    except RedisError as exc:
        logger.info("cancel of %d job(s) skipped, Redis unavailable: %s", len(job_ids), exc)


# Whether a job will still run, judged from where it is rather than from its status alone: a job
# a worker popped and then died with keeps the status `queued` while in no queue, and a `started`
# job of a killed worker stays `started` until RQ's own cleanup, up to the job timeout.
# Alive: in rq-scheduler's set, or `queued` and still in its queue's list, or `started` by a
# worker whose key (renewed by its heartbeat) still exists, or waiting on RQ's own registries.
_JOBS_ALIVE_SCRIPT = """
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local alive = 0
  if redis.call('zscore', ARGV[3], id) then
    alive = 1
  else
    local f = redis.call('hmget', ARGV[1] .. id, 'status', 'origin', 'worker_name')
    local status, origin, worker = f[1], f[2], f[3]
    if status == 'queued' and origin then
      if redis.call('lpos', ARGV[2] .. origin, id) then alive = 1 end
    elseif status == 'started' and worker and worker ~= '' then
      alive = redis.call('exists', ARGV[4] .. worker)
    elseif status == 'scheduled' or status == 'deferred' then
      alive = 1
    end
  end
  out[#out + 1] = alive
end
return out
"""


def jobs_alive(job_ids: Iterable[str]) -> dict[str, bool]:
    """Whether each job will still run or is running on a live worker (one round trip)."""
    job_ids = list(dict.fromkeys(job_ids))
    if not job_ids:
        return {}
    redis = connection()
    answers = redis.register_script(_JOBS_ALIVE_SCRIPT)(
        args=[
            Job.redis_job_namespace_prefix,
            Queue.redis_queue_namespace_prefix,
            DjangoScheduler.scheduled_jobs_key,
            "rq:worker:",
            *job_ids,
        ]
    )
    return {job_id: bool(alive) for job_id, alive in zip(job_ids, answers, strict=True)}


# A drain marker says "a drain job for this priority is waiting in its queue". It expires on its
# own so that a marker whose job was lost (a worker killed right after popping it, say) cannot
# stop drains for longer than this even without the sweeper, which repairs it sooner.
DRAIN_MARKER_TTL_SECONDS = 120


def drain_marker_key(priority: str) -> str:
    """Redis key naming the pending drain job of a priority."""
    return f"mailqueue:drain:{priority}"


def _drain_job_data(redis: Redis, priority: str, job_id: str):
    return django_rq.get_queue(priority, connection=redis).prepare_data(
        DRAIN_FUNC,
        args=(priority,),
        job_id=job_id,
        timeout=JOB_TIMEOUT_SECONDS,
        result_ttl=RESULT_TTL_SECONDS,
        failure_ttl=FAILURE_TTL_SECONDS,
        description=f"drain {priority}",
    )


def drains_request(
    priorities: Iterable[str], *, force: bool = False, also: AlsoQueue = None
) -> list[str]:
    """Make sure a drain job is pending for each priority; return the ids of jobs enqueued.

    One `SET NX` per priority when a drain is already pending (the common case under load), one
    more round trip when a job must be enqueued. `force` replaces the marker (the sweeper found
    its job dead). Raises RedisError if Redis is unreachable.
    """
    priorities = list(dict.fromkeys(priorities))
    if not priorities:
        return []
    redis = connection()
    proposed = {priority: f"drain-{priority}-{uuid4().hex}" for priority in priorities}
    marker = {"ex": DRAIN_MARKER_TTL_SECONDS, "nx": not force}
    if len(proposed) == 1 and also is None:
        # One command, without a pipeline's own overhead.
        [(priority, job_id)] = proposed.items()
        answers = [redis.set(drain_marker_key(priority), job_id, **marker)]
    else:
        pipe = redis.pipeline()
        for priority, job_id in proposed.items():
            pipe.set(drain_marker_key(priority), job_id, **marker)
        if also is not None:
            also(pipe)
        answers = pipe.execute()[: len(proposed)]
    wanted = [priority for priority, was_set in zip(proposed, answers, strict=True) if was_set]
    if not wanted:
        return []
    pipe = redis.pipeline()
    for priority in wanted:
        django_rq.get_queue(priority, connection=redis).enqueue_many(
            [_drain_job_data(redis, priority, proposed[priority])], pipeline=pipe
        )
    pipe.execute()
    return [proposed[priority] for priority in wanted]


def drain_started(priority: str) -> None:
    """A drain job begins: drop the marker, so emails accepted from now on ask for a new drain.

    Dropped before the job claims, never after: an email committed before this point is seen by
    the claim, and one committed after it finds no marker and enqueues the next drain.
    """
    connection().delete(drain_marker_key(priority))


def drains_pending() -> dict[str, str]:
    """The marker's job id per priority, for priorities that have one (sweeper, dashboard)."""
    names = [priority.value for priority in Priority]
    pipe = connection().pipeline()
    for name in names:
        pipe.get(drain_marker_key(name))
    return {
        name: value.decode()
        for name, value in zip(names, pipe.execute(), strict=True)
        if value is not None
    }


def drains_request_on_commit(priorities: Iterable[str], *, also: AlsoQueue = None) -> None:
    """Ask for drains after the current transaction commits; if Redis is down, the sweeper will."""
    priorities = list(priorities)

    def _request() -> None:
        try:
            drains_request(priorities, also=also)
        except RedisError as exc:
            logger.warning("drain request failed, the sweeper will retry: %s", exc)

    transaction.on_commit(_request)


def jobs_waiting(queue_names: list[str]) -> int:
    """Jobs waiting on these queues (one round trip)."""
    pipe = connection().pipeline()
    for name in queue_names:
        pipe.llen(f"{Queue.redis_queue_namespace_prefix}{name}")
    return sum(pipe.execute())


@dataclass(frozen=True)
class QueueStats:
    """What is waiting in Redis, and who works on it."""

    depths: dict[str, int]
    scheduled: int
    workers: int


def queue_stats(*, queue_names: Iterable[str] = tuple(Priority.values)) -> QueueStats:
    """Jobs waiting per queue, jobs held by the scheduler, live workers (raises RedisError)."""
    redis = connection()
    names = list(queue_names)
    pipe = redis.pipeline()
    for name in names:
        pipe.llen(f"{Queue.redis_queue_namespace_prefix}{name}")
    pipe.zcard(DjangoScheduler.scheduled_jobs_key)
    *depths, scheduled = pipe.execute()
    return QueueStats(
        depths=dict(zip(names, depths, strict=True)),
        scheduled=scheduled,
        workers=live_worker_count(redis),
    )


def get_scheduler(interval: float = 1.0, connection: Redis | None = None) -> DjangoScheduler:
    """The rq-scheduler instance used for delayed sends and retries."""
    return django_rq.get_scheduler("default", interval=interval, connection=connection)
