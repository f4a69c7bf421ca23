"""The RQ worker class Mailqueue runs (settings.RQ['WORKER_CLASS']).

Stopping: the first SIGTERM (or SIGINT) is RQ's warm shutdown, and also tells the delivery in
hand to finish the sends under way, write their outcomes and put the rest of its emails back to
`queued` at once (services/delivery.py); the worker then exits. A second signal, more than a
second later (RQ ignores a repeat within one second), is RQ's cold shutdown: the job is
interrupted, what is known is written, and the process exits without waiting for the sends still
under way; their emails stay `sending` until the sweeper takes them back after their lease.
"""

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from types import FrameType

from django.db import close_old_connections, connection
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from mailqueue.priorities import HIGH, WEBHOOKS
from mailqueue.providers import close_all
from mailqueue.services.delivery import deliveries_stop, send_pool_shutdown

logger = logging.getLogger(__name__)

# A worker that starts while Redis is down waits for it, trying again this often (doubling).
BOOTSTRAP_RETRY_SECONDS = 0.5
BOOTSTRAP_RETRY_MAX_SECONDS = 5.0


def _until_redis_answers(
    action: Callable[[], object], *, before_retry: Callable[[], None] | None = None
) -> None:
    """Run a start-up step of the worker, waiting for Redis while it refuses connections.

    RQ lets a connection error at start-up out, and `rqworker` then exits with status 1: a
    worker (re)started during a Redis restart would exit at once, and its supervisor would
    restart it in a loop until Redis is back. Once started, RQ's loop rides out outages itself.
    """
    delay = BOOTSTRAP_RETRY_SECONDS
    while True:
        try:
            return action()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            logger.warning("worker: Redis down at start, retry in %.1f s: %s", delay, exc)
            time.sleep(delay)
            delay = min(2 * delay, BOOTSTRAP_RETRY_MAX_SECONDS)
            if before_retry is not None:
                with contextlib.suppress(RedisError):
                    before_retry()


class MailqueueWorker(SimpleWorker):
    """Runs jobs in the worker process itself instead of forking one process per job.

    Forking per job would throw away the provider connections (SMTP sessions, HTTP keep-alive,
    boto3 clients) that the provider registry keeps open across emails, and costs milliseconds
    per job.
    """

    def __init__(self, queues, *args, **kwargs) -> None:
        """RQ's worker, also serving the `webhooks` queue right after `high` when it serves `high`.

        So `rqworker high default low` stays the command, webhook deliveries never wait behind
        a flood of `default` or `low` email, and never delay `high` email.
        """
        super().__init__(queues, *args, **kwargs)
        names = [queue.name for queue in self.queues]
        if HIGH in names and WEBHOOKS not in names:
            webhooks = self.queue_class(
                name=WEBHOOKS,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
            self.queues.insert(names.index(HIGH) + 1, webhooks)
            self._ordered_queues = self.queues[:]
        self._cold_shutdown = False

    def _set_ip_address(self, connection: Redis) -> None:
        """RQ's first Redis call (in __init__), waiting for Redis when it is unreachable."""
        _until_redis_answers(lambda: super(MailqueueWorker, self)._set_ip_address(connection))

    def bootstrap(self, *args, **kwargs) -> None:
        """RQ's start-up (registration, pubsub), waiting for Redis when it is unreachable."""

        def start_afresh() -> None:
            # A start that got part of the way starts again from scratch: RQ refuses to
            # register a name whose key exists, and would start a second pubsub thread.
            if self.pubsub_thread:
                self.unsubscribe()
            self.connection.delete(self.key)

        _until_redis_answers(lambda: super(MailqueueWorker, self).bootstrap(*args, **kwargs),
                             before_retry=start_afresh)  # fmt: skip

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Drop a dead or stale database connection before each job, as Django does per request."""
        if not connection.in_atomic_block:
            close_old_connections()
        return super().execute_job(job, queue)

    def unsubscribe(self) -> None:
        """Stop the pubsub thread before unsubscribing, so the reply wakes it up to exit."""
        if self.pubsub_thread:
            # RQ unsubscribes first, so the thread can wake on the reply and go back to waiting
            # (up to 60 s) before it sees the stop flag; teardown then blocks a full second on
            # join(), often, at the end of every burst run and every shutdown.
            self.pubsub_thread.stop()
        super().unsubscribe()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Warm shutdown: the delivery in hand stops handing out emails, then RQ's own stop."""
        deliveries_stop()
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Cold shutdown: RQ's own (a SystemExit in the job), remembered for teardown."""
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            self._cold_shutdown = True
            raise

    def teardown(self) -> None:
        """Stop the send threads and close provider connections on shutdown; after a cold
        shutdown, exit at once instead."""
        if self._cold_shutdown:
            self._exit_now()
        send_pool_shutdown()
        close_all()
        super().teardown()

    def _exit_now(self) -> None:
        """Leave RQ's registries and end the process without waiting for the send threads.

        Python joins every send thread at exit, and one may be in the middle of an SMTP
        conversation that lasts up to its timeout; closing its connection from here would block
        on that conversation too. The operating system closes the sockets instead.
        """
        send_pool_shutdown(wait=False)
        try:
            super().teardown()
        except Exception:
            logger.exception("cold shutdown: could not unregister the worker")
        logger.warning("cold shutdown: sends under way are left to their lease")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
