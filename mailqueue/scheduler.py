"""The `rqscheduler` process: rq-scheduler's loop, which releases scheduled sends and retries
on time, plus the sweeper that puts stuck emails back (see services/sweeper.py), the runs of
recurring sends (see schedules/services.py) and the daily housekeeping (see
services/housekeeping.py).

`manage.py rqscheduler` runs it; django-rq builds it from `RQ["SCHEDULER_CLASS"]`.

SIGTERM or SIGINT ends the loop after the pass in hand (a second one ends it at once); either
way the scheduler lock and this scheduler's registration are removed before the process exits,
so a new scheduler takes over at its first poll instead of after the lock's TTL.
"""

import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone
from django_rq.queues import DjangoScheduler
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.liveness import SCHEDULER_KEY_TTL_SECONDS, SCHEDULERS_KEY
from mailqueue.services import emails_sweep
from mailqueue.services.housekeeping import housekeeping_run
from schedules.services import schedules_tick

logger = logging.getLogger(__name__)

# The release-and-sweep lock outlives a slow pass (a sweep of 10,000 rows), whatever the interval.
SCHEDULER_LOCK_TTL_SECONDS = 120
# Set for a day by the scheduler that starts the daily housekeeping: one run a day in all.
RETENTION_KEY = "mailqueue:retention:daily"
RETENTION_EVERY_SECONDS = 24 * 3600
_RELEASE_LOCK_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Longest sleep between two looks at the stop flag, whatever the polling interval.
STOP_CHECK_SECONDS = 0.5


class MailqueueScheduler(DjangoScheduler):
    """rq-scheduler's loop, plus the sweeper, and surviving Redis outages and flushes.

    Only the instance holding the scheduler lock releases jobs and sweeps, so several
    scheduler processes can run for availability.
    """

    def run(self, burst: bool = False) -> None:
        """Release due jobs every interval and sweep stuck emails every sweep interval, until
        stopped."""
        self._stop_requested = False
        self._install_signal_handlers()
        last_sweep = 0.0
        registered = False
        try:
            while not self._stop_requested:
                started = time.monotonic()
                try:
                    if not registered:
                        self.register_birth()
                        registered = True
                    self.heartbeat()
                    if self.acquire_lock():
                        try:
                            self.enqueue_jobs()
                            if started - last_sweep >= conf.sweep_interval_seconds():
                                self._sweep()
                                last_sweep = started
                        finally:
                            self.remove_lock()
                    self._purge_daily()
                    self._schedules_tick()
                except RedisError as exc:
                    logger.warning("scheduler: Redis unavailable, retrying: %s", exc)
                    registered = False
                    # Sweeping needs only the database to find work, but enqueueing needs Redis.
                if burst:
                    break
                self._sleep_until(started + self._interval)
        finally:
            self._leave()

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop after the pass in hand; a second one: stop at once.

        rq-scheduler's own handler raises SystemExit on the first signal, which can cut a pass
        (and a sweep's transaction) in half.
        """

        def stop(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested:
                raise SystemExit()
            # Only a flag: the handler runs between two statements of the loop, which may hold
            # a lock that anything more would need.
            self._stop_requested = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def _sleep_until(self, moment: float) -> None:
        """Sleep until a monotonic time, waking up soon after a stop is requested."""
        while not self._stop_requested and (remaining := moment - time.monotonic()) > 0:
            time.sleep(min(remaining, STOP_CHECK_SECONDS))

    def _leave(self) -> None:
        """Release the lock and unregister, so another scheduler takes over at its next poll."""
        try:
            # Whether or not this process knows it holds the lock (a signal may land between the
            # SET and the bookkeeping): the script deletes it only if the value is our name.
            self._release_lock(keys=[self.scheduler_lock_key], args=[self.name])
            self._lock_acquired = False
            purge = getattr(self, "purge_thread", None)
            if purge is not None and purge.is_alive() and not self._stop_requested:
                purge.join()  # a run that ends on its own (--burst) lets its purge finish
            if purge is not None and purge.is_alive():
                # The purge dies with this process; let the next scheduler start it again today
                # rather than tomorrow (each batch is its own transaction: nothing half-done).
                self._release_lock(keys=[RETENTION_KEY], args=[self.name])
            self.register_death()
        except RedisError as exc:
            logger.warning("scheduler: could not unregister (Redis unavailable): %s", exc)
        logger.info("scheduler stopped")

    def get_jobs_to_queue(self, with_times: bool = False) -> Iterator:
        """Jobs due now, to the microsecond (rq-scheduler's own check is to the whole second)."""
        return self.get_jobs(time.time(), with_times=with_times)

    def register_birth(self) -> None:
        """Register this scheduler (with its host, for health checks) in a set of schedulers."""
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping={"birth": time.time(), "hostname": socket.gethostname()})
            pipe.expire(self.key, SCHEDULER_KEY_TTL_SECONDS)
            pipe.sadd(SCHEDULERS_KEY, self.key)
            pipe.execute()

    def register_death(self) -> None:
        """Unregister at once: a scheduler that stopped is not alive for health checks."""
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.srem(SCHEDULERS_KEY, self.key)
            pipe.execute()

    def heartbeat(self) -> None:
        """Keep this scheduler's key alive; register again if it vanished (Redis flushed)."""
        if not self.connection.expire(self.key, SCHEDULER_KEY_TTL_SECONDS):
            self.register_birth()

    def acquire_lock(self) -> bool:
        """Take the lock (named after this scheduler) unless another scheduler holds it."""
        self._lock_acquired = bool(
            self.connection.set(
                self.scheduler_lock_key, self.name, ex=SCHEDULER_LOCK_TTL_SECONDS, nx=True
            )
        )
        return self._lock_acquired

    def remove_lock(self) -> None:
        """Release the lock only if it is still ours (it may have expired and been taken)."""
        if self._lock_acquired:
            self._release_lock(keys=[self.scheduler_lock_key], args=[self.name])
            self._lock_acquired = False

    @property
    def _release_lock(self):
        return self.connection.register_script(_RELEASE_LOCK_SCRIPT)

    def _purge_daily(self) -> None:
        """Start the housekeeping (old codes and handled events always, retention when it is
        set) in a thread once a day across all schedulers, so a long purge never delays
        scheduled sends; each of its batches is its own transaction."""
        if not self.connection.set(RETENTION_KEY, self.name, ex=RETENTION_EVERY_SECONDS, nx=True):
            return
        self.purge_thread = threading.Thread(target=self._purge, name="housekeeping", daemon=True)
        self.purge_thread.start()

    def _purge(self) -> None:
        try:
            housekeeping_run()
        except Exception:
            logger.exception("daily housekeeping failed; the next daily run continues it")
        finally:
            # The thread's own connection: nothing else would ever close it.
            connection.close()

    def _schedules_tick(self) -> None:
        """Make the runs of recurring sends that are due. Every scheduler does it, lock or not:
        a unique row per tick in PostgreSQL (not a Redis lock) makes each tick run once."""
        close_old_connections()
        try:
            schedules_tick(now=timezone.now())
        except RedisError:
            raise
        except (OperationalError, InterfaceError) as exc:
            # PostgreSQL down or restarting: expected, and said once per pass without a traceback.
            logger.warning("recurring sends: database unavailable, will try again: %s", exc)
        except Exception:
            logger.exception("recurring sends failed; will try again")

    def _sweep(self) -> None:
        close_old_connections()
        try:
            result = emails_sweep()
        except RedisError:
            raise
        except (OperationalError, InterfaceError) as exc:
            logger.warning("sweeper: database unavailable, will try again: %s", exc)
            return
        except Exception:
            logger.exception("sweeper failed; will try again")
            return
        if result.total:
            logger.info("sweeper re-enqueued %s", result)
