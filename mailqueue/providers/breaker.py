"""Circuit breakers of the providers, shared by every worker process on every host through Redis.

A provider's circuit is *closed* while it works: every email may call it. When it fails (an
outage: an ESP 5xx/429, a timeout, a refused connection, a bad key; or an exception nobody
classified: DeliveryError.counts_against_provider) MAILQUEUE_BREAKER_FAILURES times within
MAILQUEUE_BREAKER_WINDOW_SECONDS, its circuit *opens* for MAILQUEUE_PROVIDER_COOLDOWN_SECONDS:
no process calls it, and email fails over to the next provider or waits. Then it is
*half-open*: exactly one call across all workers (the probe, which holds a Redis lease that
expires if its worker dies) decides; a success closes the circuit, a failure opens it again. A
reply about one message (a refusal, or a deferral such as a greylisted recipient's 451) says
nothing about the provider and is never counted: one bad message cannot open a circuit.

Costs: a failure is one round trip (a Lua script counts it in a sliding window and opens the
circuit atomically); a success while closed costs nothing; each process re-reads the circuits
it follows at most once every REFRESH_SECONDS, so the per-email check needs no Redis call.
Times are Redis's clock, so hosts whose clocks differ agree.

When Redis cannot be reached each process falls back to a breaker of its own (same rules,
counted in that process only) and logs a warning: email still fails over, only a little later
in the processes that did not see the failures themselves.
"""

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.metrics.counters import CIRCUIT_OPENED, counter_field
from mailqueue.metrics.counters import KEY as METRICS_KEY
from mailqueue.scheduling import connection

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
KEY_PREFIX = "mailqueue:breaker:"
# How stale a process's copy of the shared circuits may get.
REFRESH_SECONDS = 1.0
# Shortest wait of an email that found no provider it may call (another worker is probing).
MIN_WAIT_SECONDS = 0.2
# A probe's lease outlives the longest call a provider may take (SMTP's timeout, or anymail's
# default requests timeout of 30 s) by this much; a probe whose worker died is retried after it.
PROBE_LEASE_MARGIN_SECONDS = 10.0
_ANYMAIL_TIMEOUT_SECONDS = 30.0
# Warnings about Redis being unreachable: at most one per provider and this many seconds.
_WARN_EVERY_SECONDS = 30.0

# All scripts read the time from Redis (milliseconds) so that hosts' clocks do not matter.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: state, failures, probe, metrics hash. ARGV: threshold, window ms, open ms, probe token
# ('' for a plain call), unique member, metrics field.
# Returns {state, ms left open (open) or failures in the window (closed)}.
_FAILURE = (
    _NOW
    + """
local open_ms = tonumber(ARGV[3])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'until'))
if open_until then
  if ARGV[4] ~= '' and open_until <= now then
    -- the half-open probe failed: open again
    redis.call('HSET', KEYS[1], 'until', now + open_ms, 'opened_at', now)
    redis.call('DEL', KEYS[3])
    redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
    return {'open', open_ms}
  end
  -- a call that started before the circuit opened: already counted as far as it matters
  if open_until > now then return {'open', open_until - now} end
  return {'half_open', 0}
end
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('PEXPIRE', KEYS[2], window)
local count = redis.call('ZCARD', KEYS[2])
if count >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'until', now + open_ms, 'opened_at', now)
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
  return {'open', open_ms}
end
return {'closed', count}
"""
)

# KEYS: state, probe. ARGV: token, lease ms. Returns {closed|open|probe|busy, ms}.
_ACQUIRE = (
    _NOW
    + """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'until'))
if not open_until then return {'closed', 0} end
if open_until > now then return {'open', open_until - now} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'probe', 0} end
return {'busy', redis.call('PTTL', KEYS[2])}
"""
)

# KEYS: state, failures, probe. ARGV: token. The probe succeeded: close, unless another probe
# (this one's lease having expired) already failed and opened the circuit again.
_SUCCESS = (
    _NOW
    + """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'until'))
if open_until and open_until > now and redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return {'open', open_until - now}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {'closed', 0}
"""
)

# KEYS: probe. ARGV: token. The probe got an answer about its message, not the provider.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: state, failures, probe for each provider. ARGV: window ms.
# Returns per provider {state, ms left open, failures in the window, ms left of the probe's lease
# (0: no probe under way)}.
_READ = (
    _NOW
    + """
local window = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  local open_until = tonumber(redis.call('HGET', KEYS[i], 'until'))
  local failures = redis.call('ZCOUNT', KEYS[i + 1], now - window, '+inf')
  local probing = math.max(0, redis.call('PTTL', KEYS[i + 2]))
  if not open_until then
    out[#out + 1] = {'closed', 0, failures, probing}
  elseif open_until > now then
    out[#out + 1] = {'open', open_until - now, failures, probing}
  else
    out[#out + 1] = {'half_open', 0, failures, probing}
  end
end
return out
"""
)


@dataclass(frozen=True)
class Permit:
    """Leave to call a provider once: a plain call (circuit closed) or the half-open probe."""

    # The probe's Redis lease token; empty for a plain call.
    token: str = ""
    # The probe of this process's own breaker (Redis unreachable).
    local: bool = False

    @property
    def probe(self) -> bool:
        """Whether this call decides a half-open circuit."""
        return bool(self.token) or self.local


CALL = Permit()


@dataclass(frozen=True)
class CircuitState:
    """One provider's circuit as operators see it."""

    state: str
    seconds_left: float = 0.0
    recent_failures: int = 0
    probing: bool = False
    # Seconds left of the probe's lease (0: no probe under way).
    probe_seconds_left: float = 0.0


@dataclass
class _LocalCircuit:
    """This process's own breaker for one provider, used while Redis cannot be reached."""

    failures: deque = field(default_factory=deque)
    open_until: float | None = None  # monotonic; None: closed
    probing: bool = False

    def remaining(self, now: float) -> float:
        """Seconds before a call may be made (0: closed, or half-open without a probe)."""
        if self.open_until is None:
            return 0.0
        if now < self.open_until:
            return self.open_until - now
        return REFRESH_SECONDS if self.probing else 0.0

    def fail(self, now: float, *, probe: bool) -> bool:
        """Count a transient failure; whether the circuit opened."""
        if probe:
            # The half-open probe failed (here, or in Redis's circuit before Redis went away).
            self.open_until, self.probing = now + conf.provider_cooldown_seconds(), False
            return True
        if self.open_until is not None:
            return False
        window = conf.breaker_window_seconds()
        self.failures.append(now)
        while self.failures and self.failures[0] <= now - window:
            self.failures.popleft()
        if len(self.failures) >= conf.breaker_failures():
            self.open_until = now + conf.provider_cooldown_seconds()
            self.failures.clear()
            return True
        return False


def _keys(name: str) -> tuple[str, str, str]:
    """The state hash, the failures' sorted set and the probe lease of a provider."""
    base = f"{KEY_PREFIX}{name}"
    return base, f"{base}:failures", f"{base}:probe"


def probe_lease_seconds() -> float:
    """How long a half-open probe's lease holds: longer than any provider call may take."""
    return max(conf.smtp_timeout(), _ANYMAIL_TIMEOUT_SECONDS) + PROBE_LEASE_MARGIN_SECONDS


class ProviderBreakers:
    """The circuits of the providers as one process sees them: the shared state in Redis, a
    local copy of it refreshed at most every REFRESH_SECONDS, and the fallback breakers used
    while Redis cannot be reached. One instance per process (`breakers`); tests make more to
    stand for other processes."""

    def __init__(
        self,
        *,
        redis: Callable[[], Redis] = connection,
        lease_seconds: Callable[[], float] = probe_lease_seconds,
    ) -> None:
        self._redis = redis
        self._lease_seconds = lease_seconds
        # Provider name -> monotonic end of its open period (only open or half-open circuits).
        self._open_until: dict[str, float] = {}
        # Provider name -> monotonic time before which another process's probe is assumed on.
        self._busy_until: dict[str, float] = {}
        self._local: dict[str, _LocalCircuit] = {}
        self._local_lock = threading.Lock()
        self._watched: set[str] = set()
        self._refreshed_at = float("-inf")
        self._refresh_lock = threading.Lock()
        self._warned_at: dict[str, float] = {}

    # --- the per-email checks (no Redis call but the periodic refresh) -----------------------

    def in_service(self, names: list[str]) -> list[str]:
        """The names whose circuit lets a call through now (closed, or half-open with no probe
        under way that this process knows of), in the given order."""
        self._refresh(names)
        now = time.monotonic()
        return [name for name in names if self._wait(name, now) == 0.0]

    def wait_seconds(self, names: list[str]) -> float:
        """Seconds until the first of these providers may be called again (0 if one may now)."""
        self._refresh(names)
        now = time.monotonic()
        wait = min(self._wait(name, now) for name in names) if names else 0.0
        return 0.0 if wait == 0.0 else max(wait, MIN_WAIT_SECONDS)

    def _wait(self, name: str, now: float) -> float:
        wait = 0.0
        open_until = self._open_until.get(name)
        if open_until is not None:
            wait = max(open_until - now, self._busy_until.get(name, 0.0) - now, 0.0)
        local = self._local.get(name)
        if local is not None:
            wait = max(wait, local.remaining(now))
        return wait

    def permit(self, name: str) -> Permit | None:
        """Leave to call the provider now, or None while its circuit is open or another worker
        is probing it. A half-open circuit's probe is taken here (one Redis call)."""
        now = time.monotonic()
        if name not in self._watched or now - self._refreshed_at >= REFRESH_SECONDS:
            self._refresh((name,))
            now = time.monotonic()
        local = self._local.get(name)
        if local is not None and local.open_until is not None:
            return self._local_permit(name, local, now)
        open_until = self._open_until.get(name)
        if open_until is None:
            return CALL
        if now < open_until or now < self._busy_until.get(name, 0.0):
            return None
        token = uuid.uuid4().hex
        state, _, probe = _keys(name)
        lease_ms = max(1, int(self._lease_seconds() * 1000))
        try:
            verdict, ms = self._redis().eval(_ACQUIRE, 2, state, probe, token, lease_ms)
        except RedisError as exc:
            self._warn(name, "its probe is decided in this process only", exc)
            with self._local_lock:
                local = self._local.setdefault(name, _LocalCircuit(open_until=open_until))
                if local.open_until is None:
                    local.open_until = open_until
            return self._local_permit(name, local, now)
        return self._apply(name, verdict.decode(), ms, now, token=token)

    def _apply(self, name: str, verdict: str, ms: int, now: float, *, token: str) -> Permit | None:
        """Take in what Redis answered about a circuit; the permit it gives, if any."""
        if verdict == CLOSED:
            self._open_until.pop(name, None)
            self._busy_until.pop(name, None)
            return CALL
        if verdict == OPEN:
            self._open_until[name] = now + ms / 1000
            return None
        if verdict == "probe":
            return Permit(token=token)
        # Another worker holds the probe: ask again when its lease ends or after the next
        # refresh, whichever comes first.
        self._open_until[name] = min(self._open_until.get(name, now), now)
        self._busy_until[name] = now + min(REFRESH_SECONDS, max(ms, 0) / 1000)
        return None

    def _local_permit(self, name: str, local: _LocalCircuit, now: float) -> Permit | None:
        """The permit of this process's own breaker (open: none; half-open: one probe)."""
        with self._local_lock:
            if local.open_until is None:
                return CALL
            if now < local.open_until or local.probing:
                return None
            local.probing = True
            return Permit(local=True)

    # --- the outcomes of calls -------------------------------------------------------------

    def record_success(self, name: str, permit: Permit) -> None:
        """The provider took a message. A plain call costs nothing; a probe closes the circuit."""
        if not permit.probe:
            return
        if permit.local:
            with self._local_lock:
                self._local.pop(name, None)
            self._open_until.pop(name, None)
            return
        try:
            verdict, ms = self._redis().eval(_SUCCESS, 3, *_keys(name), permit.token)
        except RedisError as exc:
            self._warn(name, "its circuit is closed in this process only", exc)
            self._open_until.pop(name, None)
            return
        if self._apply(name, verdict.decode(), ms, time.monotonic(), token="") is CALL:
            logger.info("provider %s: probe succeeded, circuit closed", name)

    def record_failure(self, name: str, permit: Permit) -> None:
        """The provider failed transiently: count it (one round trip); may open the circuit."""
        now = time.monotonic()
        if not permit.local:
            state, failures, probe = _keys(name)
            try:
                verdict, ms = self._redis().eval(
                    _FAILURE,
                    4,
                    state,
                    failures,
                    probe,
                    METRICS_KEY,
                    conf.breaker_failures(),
                    max(1, int(conf.breaker_window_seconds() * 1000)),
                    int(conf.provider_cooldown_seconds() * 1000),
                    permit.token,
                    uuid.uuid4().hex,
                    counter_field(CIRCUIT_OPENED, name),
                )
            except RedisError as exc:
                self._warn(name, "its failures are counted in this process only", exc)
            else:
                was_open = name in self._open_until
                self._apply(name, verdict.decode(), ms, now, token="")
                if verdict == b"open" and (permit.probe or not was_open):
                    logger.warning("provider %s: circuit open for %.1f s", name, ms / 1000)
                return
        with self._local_lock:
            local = self._local.setdefault(name, _LocalCircuit())
            if local.fail(now, probe=permit.probe):
                logger.warning("provider %s: circuit open in this process", name)

    def record_refusal(self, name: str, permit: Permit) -> None:
        """The provider refused one message (not its fault): a probe gives its lease back, so
        the next email probes; the circuit stays as it was."""
        if permit.local:
            with self._local_lock:
                local = self._local.get(name)
                if local is not None:
                    local.probing = False
        elif permit.token:
            try:
                self._redis().eval(_RELEASE, 1, _keys(name)[2], permit.token)
            except RedisError as exc:
                self._warn(name, "its probe lease is left to expire", exc)

    # --- reading the shared state ------------------------------------------------------------

    def _refresh(self, names: Iterable[str]) -> None:
        """Re-read the shared circuits if the copy is older than REFRESH_SECONDS or misses one."""
        names = set(names)
        if names <= self._watched and time.monotonic() - self._refreshed_at < REFRESH_SECONDS:
            return
        # A thread meeting a new name waits for its first read; for a periodic refresh, one send
        # thread reads and the others go on with the copy they have.
        if not self._refresh_lock.acquire(blocking=not names <= self._watched):
            return
        try:
            if names <= self._watched and time.monotonic() - self._refreshed_at < REFRESH_SECONDS:
                return  # another thread read it while this one waited
            watched = sorted(self._watched | names)
            circuits = self._read(watched)
            now = time.monotonic()
            for name, circuit in circuits.items():
                if circuit.state == CLOSED:
                    self._open_until.pop(name, None)
                    self._busy_until.pop(name, None)
                    continue
                self._open_until[name] = now + circuit.seconds_left
                if circuit.probing:
                    wait = min(REFRESH_SECONDS, circuit.probe_seconds_left)
                    self._busy_until[name] = now + wait
                else:
                    self._busy_until.pop(name, None)
        except RedisError as exc:
            logger.debug("provider circuits not refreshed from Redis (%s)", exc)
        finally:
            # Marked as read only now, so threads meeting these names wait for this read.
            self._watched.update(names)
            self._refreshed_at = time.monotonic()
            self._refresh_lock.release()

    def _read(self, names: list[str]) -> dict[str, CircuitState]:
        if not names:
            return {}
        keys = [key for name in names for key in _keys(name)]
        window = max(1, int(conf.breaker_window_seconds() * 1000))
        rows = self._redis().eval(_READ, len(keys), *keys, window)
        return {
            name: CircuitState(
                state=state.decode(),
                seconds_left=ms / 1000,
                recent_failures=int(failures),
                probing=probing > 0,
                probe_seconds_left=probing / 1000,
            )
            for name, (state, ms, failures, probing) in zip(names, rows, strict=True)
        }

    def states(self, names: list[str]) -> dict[str, CircuitState]:
        """Each provider's circuit, read from Redis now (raises RedisError)."""
        return self._read(list(names))

    def local_states(self, names: list[str]) -> dict[str, CircuitState]:
        """The circuits of this process's own fallback breakers (Redis unreachable)."""
        now = time.monotonic()
        states = {}
        for name in names:
            local = self._local.get(name)
            if local is None or local.open_until is None:
                recent = len(local.failures) if local else 0
                states[name] = CircuitState(state=CLOSED, recent_failures=recent)
            elif now < local.open_until:
                states[name] = CircuitState(state=OPEN, seconds_left=local.open_until - now)
            else:
                states[name] = CircuitState(state=HALF_OPEN, probing=local.probing)
        return states

    def forget_local(self) -> None:
        """Drop this process's copy and fallback breakers (worker shutdown, tests); Redis keeps
        the shared state."""
        with self._local_lock:
            self._local.clear()
        self._open_until.clear()
        self._busy_until.clear()
        self._watched.clear()
        self._refreshed_at = float("-inf")

    def _warn(self, name: str, consequence: str, exc: Exception) -> None:
        """One warning per provider and _WARN_EVERY_SECONDS while Redis cannot be reached."""
        now = time.monotonic()
        if now - self._warned_at.get(name, float("-inf")) >= _WARN_EVERY_SECONDS:
            self._warned_at[name] = now
            logger.warning("provider %s: Redis unreachable, %s (%s)", name, consequence, exc)


# This process's view of the circuits.
breakers = ProviderBreakers()
