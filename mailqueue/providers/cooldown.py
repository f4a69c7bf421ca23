"""Providers cooling down after an outage, shared by every process through Redis.

An outage report (rare) writes one key with an expiry; each process keeps a local copy it
re-reads at most once a second, so a worker's per-email check costs no Redis call. When Redis
is unreachable each process falls back to its own reports: emails still fail over, a little
later in the processes that did not see the outage.
"""

import logging
import threading
import time
from collections.abc import Iterable

from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.scheduling import connection

logger = logging.getLogger(__name__)

KEY_PREFIX = "mailqueue:provider-cooldown:"
# How stale a process's copy of the shared cooldowns may get.
REFRESH_SECONDS = 1.0

# Provider name -> wall-clock end of the cooldown this process reported (Redis or not).
_reported: dict[str, float] = {}
# Provider name -> wall-clock end of a cooldown, as last read from Redis.
_shared: dict[str, float] = {}
# Names whose shared state this process follows (the providers it has asked about).
_watched: set[str] = set()
_refreshed_at = float("-inf")
_refresh_lock = threading.Lock()


def _key(name: str) -> str:
    return f"{KEY_PREFIX}{name}"


def provider_report_outage(name: str) -> None:
    """Skip this provider for MAILQUEUE_PROVIDER_COOLDOWN_SECONDS in every process: it is
    unreachable or unusable, and every email would otherwise wait for its timeout."""
    seconds = conf.provider_cooldown_seconds()
    until = time.time() + seconds
    _reported[name] = until
    _watched.add(name)
    if seconds <= 0:
        return
    try:
        connection().set(_key(name), repr(until), px=max(1, int(seconds * 1000)))
    except RedisError as exc:
        logger.warning("provider %s: cooldown kept in this process only (%s)", name, exc)


def provider_report_success(name: str) -> None:
    """The provider works (again): end its cooldown everywhere."""
    known = _reported.pop(name, None), _shared.pop(name, None)
    if known == (None, None):
        return  # the usual case: no cooldown to end, no Redis call
    try:
        connection().delete(_key(name))
    except RedisError as exc:
        logger.warning("provider %s: could not end its shared cooldown (%s)", name, exc)


def _refresh(names: Iterable[str]) -> None:
    """Re-read the shared cooldowns if the copy is older than REFRESH_SECONDS or misses a name."""
    global _shared, _refreshed_at
    names = set(names)
    if names <= _watched and time.monotonic() - _refreshed_at < REFRESH_SECONDS:
        return
    # A thread that meets a new name waits for its first read; for a periodic refresh, one send
    # thread reads and the others go on with the copy they have.
    if not _refresh_lock.acquire(blocking=not names <= _watched):
        return
    try:
        now = time.monotonic()
        if names <= _watched and now - _refreshed_at < REFRESH_SECONDS:
            return  # another thread read it while this one waited
        watched = sorted(_watched | names)
        values = connection().mget([_key(name) for name in watched])
        _shared = {name: float(v) for name, v in zip(watched, values, strict=True) if v}
    except RedisError as exc:
        logger.debug("provider cooldowns not refreshed from Redis (%s)", exc)
    finally:
        # Marked as read only now, so threads meeting these names wait for this read.
        _watched.update(names)
        _refreshed_at = time.monotonic()
        _refresh_lock.release()


def _cooling_until(name: str) -> float:
    return max(_reported.get(name, 0.0), _shared.get(name, 0.0))


def providers_in_service(names: list[str]) -> list[str]:
    """The names of the providers not cooling down after an outage, in the given order."""
    _refresh(names)
    now = time.time()
    return [name for name in names if _cooling_until(name) <= now]


def providers_cooldown_remaining(names: list[str]) -> float:
    """Seconds until the first of these providers ends its cooldown (0 if one is in service)."""
    _refresh(names)
    now = time.time()
    return max(0.0, min(_cooling_until(name) for name in names) - now)


def provider_cooldowns(*, names: list[str]) -> dict[str, float]:
    """Seconds of cooldown left per provider, read from Redis now (raises RedisError)."""
    values = connection().mget([_key(name) for name in names]) if names else []
    now = time.time()
    return {
        name: float(value) - now
        for name, value in zip(names, values, strict=True)
        if value and float(value) > now
    }


def cooldowns_forget_local() -> None:
    """Drop this process's copy and reports (worker shutdown, tests); Redis keeps its keys."""
    global _shared, _refreshed_at
    _reported.clear()
    _shared = {}
    _watched.clear()
    _refreshed_at = float("-inf")
