"""Per-API-key throttling, off unless MAILQUEUE_API_THROTTLE_RATE is set (e.g. `100/s`).

Counted in Redis with the same GCRA script as the sending limits (mailqueue/rate_limits.py),
one round trip per request, so every web process on every host shares each key's count. A
rate `N/period` lets N requests through at once, then one every period/N.
"""

import logging
import math
import time

from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from mailqueue import conf, priorities
from mailqueue.models import ApiKey
from mailqueue.rate_limits import RateLimit, buckets_acquire

logger = logging.getLogger(__name__)

# Redis down: requests pass (the API answers what it can; sends need Redis anyway and fail with
# 503 on their own), with one warning per interval rather than one per request.
RETRY_AFTER_SECONDS = 10.0
_skip_until = 0.0


class ApiKeyRateThrottle(BaseThrottle):
    """Limits requests per API key, counted in Redis (shared by every web process)."""

    scope = "api_key"

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def allow_request(self, request, view) -> bool:
        """One GCRA check of the key's bucket; no Redis call without a rate or an API key."""
        global _skip_until
        rate = conf.api_throttle_rate()
        if rate is None or not isinstance(request.auth, ApiKey):
            return True
        if time.monotonic() < _skip_until:
            return True
        count, period = SimpleRateThrottle.parse_rate(None, rate)
        limit = RateLimit(name=f"api:{request.auth.pk}", count=count, period=period, burst=count)
        try:
            # `high`: the whole burst (the reserve is a sending matter).
            acquired = buckets_acquire([limit], priority=priorities.HIGH)
        except (RedisError, OSError) as exc:
            _skip_until = time.monotonic() + RETRY_AFTER_SECONDS
            logger.warning(
                "API throttle: Redis unavailable, requests not throttled for %.0f s: %s",
                RETRY_AFTER_SECONDS,
                exc,
            )
            return True
        if acquired.booked:
            return True
        self.wait_seconds = acquired.wait
        return False

    def wait(self) -> float | None:
        """Whole seconds until the key may call again (the 429's Retry-After)."""
        if self.wait_seconds is None:
            return None
        return max(1, math.ceil(self.wait_seconds))
