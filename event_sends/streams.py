"""The Redis side of event-driven sends: the events stream, its consumer group and the
dead-letter stream. Every function takes the Redis client it talks to, so the consumer process
(which blocks on reads) and the web process (which must not) each pass their own.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import ResponseError

from event_sends import conf

# The stream entry's one field other services write: the event's JSON document.
EVENT_FIELD = b"event"
# Counting the lag by reading the stream (Redis before 7, or a lag Redis cannot compute) stops
# here: a number this large already says "far behind".
LAG_COUNT_CAP = 10000


@dataclass(frozen=True)
class StreamEntry:
    """One entry read from the events stream: its id and its raw `event` field (None when the
    entry has no such field)."""

    entry_id: str
    raw: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    entry_id: str
    reason: str
    event: str
    stream_id: str
    consumer: str
    failed_at: str


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def group_ensure(redis: Redis) -> None:
    """Create the stream and its consumer group if missing; the group starts at the stream's
    beginning, so events published before the first consumer ever ran are handled too."""
    try:
        redis.xgroup_create(conf.events_stream(), conf.events_group(), id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(response: list) -> list[StreamEntry]:
    """Entries of an XREADGROUP/XAUTOCLAIM answer; deleted ones (None fields) are skipped."""
    return [
        StreamEntry(entry_id=_text(entry_id), raw=fields.get(EVENT_FIELD))
        for entry_id, fields in response
        if fields is not None
    ]


def entries_read(redis: Redis, *, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
    """New entries for this consumer (waiting up to `block_ms` for some); they stay pending
    under its name until acknowledged."""
    response = redis.xreadgroup(
        conf.events_group(), consumer, {conf.events_stream(): ">"}, count=count, block=block_ms
    )
    return _entries(response[0][1]) if response else []


def entries_claim(
    redis: Redis, *, consumer: str, count: int, start_id: str = "0-0"
) -> tuple[str, list[StreamEntry]]:
    """Entries another consumer read but has not acknowledged for the claim idle time (it died,
    or hangs): they become this consumer's. Returns where the next scan starts ("0-0" once
    the whole pending list was scanned) and the entries."""
    idle_ms = int(conf.events_claim_idle_seconds() * 1000)
    response = redis.xautoclaim(
        conf.events_stream(), conf.events_group(), consumer, idle_ms, start_id=start_id, count=count
    )
    # XAUTOCLAIM answers [next start id, entries, deleted ids] (Redis 7; two items before).
    return _text(response[0]), _entries(response[1])


def delivery_count(redis: Redis, *, entry_id: str) -> int:
    """How many times the group has handed this pending entry out (0 when it is not pending)."""
    rows = redis.xpending_range(
        conf.events_stream(), conf.events_group(), min=entry_id, max=entry_id, count=1
    )
    return rows[0]["times_delivered"] if rows else 0


def entry_ack(redis: Redis, *, entry_id: str) -> None:
    """Acknowledge an entry: its emails are committed, no consumer reads it again."""
    redis.xack(conf.events_stream(), conf.events_group(), entry_id)


def entry_dead_letter(redis: Redis, *, entry: StreamEntry, reason: str, consumer: str) -> None:
    """Move an entry to the dead-letter stream with the reason, and acknowledge it, at once."""
    fields = {
        "reason": reason,
        "event": entry.raw if entry.raw is not None else b"",
        "stream_id": entry.entry_id,
        "consumer": consumer,
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(
            conf.events_dead_stream(), fields, maxlen=conf.events_dead_max_len(), approximate=True
        )
        pipe.xack(conf.events_stream(), conf.events_group(), entry.entry_id)
        pipe.execute()


def stream_trim_handled(redis: Redis) -> None:
    """Drop entries every consumer is done with: older than the oldest pending entry and than
    the group's last delivered one. Acknowledged entries are not needed again (duplicates are
    recognised in PostgreSQL), and the stream would otherwise grow forever."""
    stream, group = conf.events_stream(), conf.events_group()
    info = next((row for row in redis.xinfo_groups(stream) if _text(row["name"]) == group), None)
    if info is None:
        return
    min_id = _text(info["last-delivered-id"])
    if info["pending"]:
        oldest = redis.xpending(stream, group)["min"]
        min_id = min(min_id, _text(oldest), key=_id_key)
    # `~`: only whole internal nodes go, which costs Redis nearly nothing.
    redis.xtrim(stream, minid=min_id, approximate=True)


# XINFO CONSUMERS and XGROUP DELCONSUMER in one step: a consumer that reads an entry between
# the two would otherwise lose it (deleting a consumer drops its pending entries for good).
_PRUNE_CONSUMERS = """
local removed = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
"""


def consumers_prune(redis: Redis, *, keep: str, idle_seconds: float) -> list[str]:
    """Remove the group's consumers that have nothing pending and have been idle longer than
    `idle_seconds` (processes that died without leaving), never `keep`; their names."""
    removed = redis.eval(
        _PRUNE_CONSUMERS,
        1,
        conf.events_stream(),
        conf.events_group(),
        keep,
        int(idle_seconds * 1000),
    )
    return [_text(name) for name in removed]


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def event_add(redis: Redis, *, raw: bytes | str, **extra: str) -> str:
    """XADD an event to the events stream (what a producer does); its new entry id."""
    return _text(redis.xadd(conf.events_stream(), {EVENT_FIELD: raw, **extra}))


def dead_letters_list(redis: Redis, *, count: int, before: str | None = None) -> list[DeadLetter]:
    """Dead letters, newest first, up to `count`, older than entry `before` if given."""
    end = f"({before}" if before else "+"
    rows = redis.xrevrange(conf.events_dead_stream(), max=end, min="-", count=count)
    return [
        DeadLetter(
            entry_id=_text(entry_id),
            reason=_text(fields.get(b"reason")),
            event=_text(fields.get(b"event")),
            stream_id=_text(fields.get(b"stream_id")),
            consumer=_text(fields.get(b"consumer")),
            failed_at=_text(fields.get(b"failed_at")),
        )
        for entry_id, fields in rows
    ]


def dead_letter_replay(redis: Redis, *, entry_id: str) -> bool:
    """Put a dead letter's event back on the events stream and remove the dead letter, in one
    transaction; False when there is no such dead letter."""
    dead = conf.events_dead_stream()
    rows = redis.xrange(dead, min=entry_id, max=entry_id, count=1)
    if not rows:
        return False
    fields = rows[0][1]
    with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(
            conf.events_stream(),
            {EVENT_FIELD: fields.get(b"event", b""), "replayed_from": entry_id},
        )
        pipe.xdel(dead, entry_id)
        pipe.execute()
    return True


def dead_letter_delete(redis: Redis, *, entry_id: str) -> bool:
    """Delete a dead letter; False when there was none with that id."""
    return bool(redis.xdel(conf.events_dead_stream(), entry_id))


def stream_stats(redis: Redis) -> dict[str, int]:
    """Lag, pending entries and consumers of the group, and dead letters: a few O(1) calls."""
    stream, group = conf.events_stream(), conf.events_group()
    stats = {"lag": 0, "pending": 0, "dead_letters": redis.xlen(conf.events_dead_stream())}
    stats["consumers"] = 0
    try:
        groups = redis.xinfo_groups(stream)
    except ResponseError:
        return stats  # no stream yet: nothing published, nothing behind
    info = next((row for row in groups if _text(row["name"]) == group), None)
    if info is None:
        # No consumer has started yet: everything in the stream waits.
        stats["lag"] = min(redis.xlen(stream), LAG_COUNT_CAP)
        return stats
    stats["pending"] = int(info["pending"])
    stats["consumers"] = int(info["consumers"])
    lag = info.get("lag")
    if lag is None:
        # Redis < 7, or a lag Redis cannot tell after deletions: count what follows the
        # group's position, up to a cap.
        after = f"({_text(info['last-delivered-id'])}"
        lag = len(redis.xrange(stream, min=after, max="+", count=LAG_COUNT_CAP))
    stats["lag"] = int(lag)
    return stats
