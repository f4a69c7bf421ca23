"""Admin login throttling, shared by every web process through Redis, and the client address it
counts by.

Failed admin logins are counted per client IP and per username in a fixed window
(MAILQUEUE_ADMIN_LOGIN_WINDOW_SECONDS, starting at the first failure); at
MAILQUEUE_ADMIN_LOGIN_FAILURES either count blocks further tries until the window ends, before
the password is checked. A successful login clears its username's count (not its IP's: many
operators may share one address). When Redis cannot be reached the limit is not enforced and a
warning is logged: the passwords still protect the admin, and locking every operator out of it
during a Redis outage, when they need the dashboard most, would be worse.
"""

import hashlib
import logging
from dataclasses import dataclass

from django.http import HttpRequest
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.scheduling import connection

logger = logging.getLogger(__name__)

_KEY_PREFIX = "mailqueue:admin-login"
# Seconds a Redis command of the login may take: a stalled Redis must not hang the login page.
_REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class LoginAttempt:
    """Who tries to log in: the client's address and the username typed."""

    ip: str
    username: str

    def redis_keys(self) -> tuple[str, str]:
        """The Redis keys of this attempt's two counters (the username hashed: any text fits)."""
        username = hashlib.sha256(self.username.strip().casefold().encode()).hexdigest()
        return f"{_KEY_PREFIX}:ip:{self.ip}", f"{_KEY_PREFIX}:user:{username}"


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or with MAILQUEUE_TRUSTED_PROXIES = n the n-th address
    from the right of X-Forwarded-For (the one our first proxy saw; those left of it are the
    client's to choose, so they are never trusted)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = conf.trusted_proxies()
    if not proxies:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    # Fewer addresses than proxies: the request did not come through all of them.
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def login_attempt(request: HttpRequest) -> LoginAttempt:
    """The attempt a login POST makes."""
    return LoginAttempt(ip=client_ip(request), username=str(request.POST.get("username", "")))


def login_blocked_seconds(attempt: LoginAttempt) -> int:
    """Seconds until this IP and username may try again; 0 when they may now (or when Redis
    cannot tell: see the module docstring)."""
    limit = conf.admin_login_failures()
    try:
        pipe = connection(timeout=_REDIS_TIMEOUT_SECONDS).pipeline(transaction=False)
        for key in attempt.redis_keys():
            pipe.get(key)
            pipe.ttl(key)
        ip_count, ip_ttl, user_count, user_ttl = pipe.execute()
    except RedisError as exc:
        logger.warning(
            "Admin login limit not checked: Redis is unavailable (%s).",
            type(exc).__name__,
            extra={"event": "admin.login_limit_unavailable"},
        )
        return 0
    waits = [
        max(ttl, 1)
        for count, ttl in ((ip_count, ip_ttl), (user_count, user_ttl))
        if count is not None and int(count) >= limit
    ]
    return max(waits, default=0)


def login_failure_record(attempt: LoginAttempt) -> None:
    """Count a failed login for its IP and its username, in one round trip."""
    window = conf.admin_login_window_seconds()
    try:
        pipe = connection(timeout=_REDIS_TIMEOUT_SECONDS).pipeline(transaction=True)
        for key in attempt.redis_keys():
            pipe.incr(key)
            # NX: the window runs from the first failure; later ones do not extend it.
            pipe.expire(key, window, nx=True)
        pipe.execute()
    except RedisError as exc:
        logger.warning(
            "Failed admin login not counted: Redis is unavailable (%s).",
            type(exc).__name__,
            extra={"event": "admin.login_limit_unavailable"},
        )


def login_success_record(attempt: LoginAttempt) -> None:
    """Clear the username's failures after it logged in."""
    try:
        connection(timeout=_REDIS_TIMEOUT_SECONDS).delete(attempt.redis_keys()[1])
    except RedisError as exc:
        logger.warning(
            "Admin login failures not cleared: Redis is unavailable (%s).",
            type(exc).__name__,
            extra={"event": "admin.login_limit_unavailable"},
        )
