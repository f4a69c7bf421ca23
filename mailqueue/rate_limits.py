"""Shared rate limits: per provider and per recipient domain, across every worker and host.

MAILQUEUE_RATE_LIMITS names the limits (`amazon_ses=14/s:28, domain:gmail.com=20/s`: a rate
per second or minute, and the burst after the colon). Each limit is one GCRA bucket in Redis
(a "theoretical arrival time" under `mailqueue:ratelimit:`), checked and consumed by one Lua
script in one round trip for every limit an email falls under: its first provider and each
limited domain among its to/cc/bcc, all or nothing. The script reads the Redis server's clock,
not the caller's: workers on hosts whose clocks differ still share one timeline.

An email may also take a slot a little ahead (`reserve_within`): the script then books it, in
the order emails ask, and the caller sleeps until the slot comes. Slots are handed out like
tickets instead of being fought over by every waiting thread each time one frees up.

`high` emails may use the whole burst; `default` and `low` ones are refused while the bucket
holds less than MAILQUEUE_RATE_LIMIT_HIGH_RESERVE of it, so a low flood leaves room for `high`.
"""

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from mailqueue import conf, priorities
from mailqueue.scheduling import connection

logger = logging.getLogger(__name__)

KEY_PREFIX = "mailqueue:ratelimit:"
DOMAIN_PREFIX = "domain:"
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_ENTRY = re.compile(
    r"^(?P<name>[^=\s]+)\s*=\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<period>[a-z]+)"
    r"\s*(?::\s*(?P<burst>\d+))?$"
)


@dataclass(frozen=True)
class RateLimit:
    """One limit: `count` emails per `period` seconds, `burst` of them at once after a pause."""

    name: str
    count: float
    period: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between two emails at the steady rate."""
        return self.period / self.count

    @property
    def key(self) -> str:
        """Its bucket in Redis."""
        return f"{KEY_PREFIX}{self.name}"

    def describe(self) -> str:
        """As written in the setting, e.g. `amazon_ses=14/s:28`."""
        unit = "s" if self.period == 1.0 else "min"
        return f"{self.name}={self.count:g}/{unit}:{self.burst}"


def rate_limits_parse(value: object) -> dict[str, RateLimit]:
    """Limits by name from the setting's text (or a list of entries); ValueError names the bad
    entry. The burst defaults to 1 (evenly spaced); a domain name is lowercased."""
    if value is None or value == "":
        return {}
    return dict(_parse_entries(tuple(value) if isinstance(value, (list, tuple)) else str(value)))


@lru_cache(maxsize=16)
def _parse_entries(value: str | tuple) -> tuple[tuple[str, RateLimit], ...]:
    # Cached: the option is read for every email while limits are on.
    entries = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    limits: dict[str, RateLimit] = {}
    for entry in (item.strip() for item in entries):
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None or match["period"] not in _PERIODS:
            raise ValueError(
                f"bad entry {entry!r}: expected name=N/s or name=N/min with an optional "
                "`:burst`, such as amazon_ses=14/s:28 or domain:gmail.com=20/s"
            )
        name, count = match["name"], float(match["count"])
        burst = int(match["burst"]) if match["burst"] is not None else 1
        if count <= 0 or burst < 1:
            raise ValueError(f"bad entry {entry!r}: the rate must be above 0, the burst 1 or more")
        if name.startswith(DOMAIN_PREFIX):
            domain = name.removeprefix(DOMAIN_PREFIX).lower()
            if not domain or "@" in domain:
                raise ValueError(f"bad entry {entry!r}: expected domain:<recipient domain>")
            name = DOMAIN_PREFIX + domain
        else:
            _check_provider(name, entry)
        if name in limits:
            raise ValueError(f"bad entry {entry!r}: {name} is limited twice")
        limits[name] = RateLimit(name, count, _PERIODS[match["period"]], burst)
    return tuple(limits.items())


def _check_provider(name: str, entry: str) -> None:
    """A limit must name a provider Mailqueue knows (as EMAIL_PROVIDERS does): a typo would
    otherwise leave the provider unlimited without a word."""
    # Here, not at the top: the providers package reads mailqueue.conf, which reads this.
    from mailqueue.errors import ProviderConfigurationError
    from mailqueue.providers import provider_class

    try:
        provider_class(name)
    except ProviderConfigurationError as exc:
        raise ValueError(f"bad entry {entry!r}: {exc}") from exc


def email_domains(addresses: Iterable[str]) -> set[str]:
    """Lowercased domains of a list of addresses (`Name <a@b>` or `a@b`)."""
    domains = set()
    for address in addresses:
        domain = parseaddr(address)[1].rpartition("@")[2].lower()
        if domain:
            domains.add(domain)
    return domains


def limits_for(*, provider: str, domains: Iterable[str]) -> list[RateLimit]:
    """The configured limits an email to these domains through this provider falls under."""
    limits = conf.rate_limits()
    if not limits:
        return []
    found = [limits[provider]] if provider in limits else []
    found += [
        limits[f"{DOMAIN_PREFIX}{d}"] for d in sorted(domains) if f"{DOMAIN_PREFIX}{d}" in limits
    ]
    return found


# GCRA over several buckets at once. Per bucket: interval (µs between emails), tolerance (µs of
# burst this caller may use: the whole burst for `high`, less the reserve for the others). An
# email may go at the first moment `start` at which every bucket allows it: for one bucket,
# max(tat, start) + interval - start <= tolerance. If `start` is within `within` µs, every
# bucket is booked for it (all or nothing); else nothing changes. Answers {wait µs, index of
# the limit that set it (0: none), booked 1/0}. Keys expire once their bucket is full again.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local within = tonumber(ARGV[1])
local tats, start, binding = {}, now, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  local earliest = tat + interval - tolerance
  if earliest > start then start, binding = earliest, i end
end
local wait = start - now
if wait > within then return {math.floor(wait), binding, 0} end
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if tat < start then tat = start end
  tat = tat + interval
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return {math.floor(wait), binding, 1}
"""

# A limit check is given up rather than waited for: see rate_limits_acquire.
TIMEOUT_SECONDS = 0.5
RETRY_AFTER_SECONDS = 10.0
_skip_until = 0.0
_scripts: dict[int, Script] = {}
_scripts_lock = threading.Lock()


def _script(redis: Redis) -> Script:
    """The GCRA script registered once per Redis client (EVALSHA, loaded again on NOSCRIPT)."""
    script = _scripts.get(id(redis))
    if script is None:
        with _scripts_lock:
            script = _scripts.setdefault(id(redis), redis.register_script(_GCRA))
    return script


@dataclass(frozen=True)
class Acquired:
    """A limit check's answer: `wait` seconds until the email may go (0: now). `booked`: the
    slot is taken, go after `wait`; else nothing was taken, ask again then. `limit`: the limit
    that made it wait."""

    wait: float
    booked: bool
    limit: RateLimit | None = None


GO = Acquired(wait=0.0, booked=True)


def buckets_acquire(
    limits: list[RateLimit],
    *,
    priority: str,
    reserve_within: float = 0.0,
    redis: Redis | None = None,
) -> Acquired:
    """Check and take one slot of every limit at once, in one round trip (raises RedisError)."""
    if not limits:
        return GO
    high = priority == priorities.HIGH
    fraction = conf.rate_limit_high_reserve()
    args: list[int] = [int(reserve_within * 1e6)]
    for limit in limits:
        interval = limit.interval * 1e6
        reserve = 0.0 if high else max(0.0, fraction * limit.burst - 1)
        args += [round(interval), round((limit.burst - reserve) * interval)]
    redis = redis or connection(timeout=TIMEOUT_SECONDS)
    wait_us, binding, booked = _script(redis)(keys=[limit.key for limit in limits], args=args)
    return Acquired(
        wait=max(0, wait_us) / 1e6,
        booked=bool(booked),
        limit=limits[binding - 1] if binding else None,
    )


def rate_limits_acquire(
    *, provider: str, recipients: Iterable[str], priority: str, reserve_within: float = 0.0
) -> Acquired:
    """Take a slot of the provider's limit and of each limited recipient domain, all or nothing.

    No limits configured: GO without a Redis call. Redis unreachable: GO as well (fail open),
    with a warning and no further try for RETRY_AFTER_SECONDS: mail keeps flowing at the
    providers' own limits rather than stopping with the limiter.
    """
    global _skip_until
    limits = limits_for(provider=provider, domains=email_domains(recipients))
    if not limits or time.monotonic() < _skip_until:
        return GO
    try:
        return buckets_acquire(limits, priority=priority, reserve_within=reserve_within)
    except (RedisError, OSError) as exc:
        _skip_until = time.monotonic() + RETRY_AFTER_SECONDS
        logger.warning(
            "rate limits: Redis unavailable, sending unlimited for the next %.0f s: %s",
            RETRY_AFTER_SECONDS,
            exc,
        )
        return GO


# Waits noted by this process's send threads, for the metrics.
_waits: dict[str, int] = {}
_waits_lock = threading.Lock()


def wait_note(name: str) -> None:
    """Note that an email had to wait for a limit (counted in the metrics)."""
    with _waits_lock:
        _waits[name] = _waits.get(name, 0) + 1


def waits_take() -> dict[str, int]:
    """The waits noted since the last call, by limit name."""
    with _waits_lock:
        taken = dict(_waits)
        _waits.clear()
    return taken


def claim_size(chunk_size: int, concurrency: int) -> int:
    """Emails a drain claims at a time: its chunk, or, while limits are configured, as many as
    its send threads.

    What a worker holds is sent at its share of a limit, behind the emails the other workers
    hold: 8 workers each holding a chunk of 100 under 10/s would send email 100 some 80 s after
    email 700. Small claims keep a priority's later emails from overtaking its earlier ones;
    the rest stay queued in order for whichever worker is free.
    """
    if conf.rate_limits():
        return min(chunk_size, concurrency)
    return chunk_size
