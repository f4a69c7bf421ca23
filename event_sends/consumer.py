"""The `consume_events` process: reads the events stream as one consumer of the group, turns
each entry into its emails, acknowledges it only once they are committed, and takes over the
entries of consumers that died before acknowledging theirs.

Delivery into the consumer is at least once (an entry is read again until acknowledged); the
handled-events table makes the emails exactly once. Optionally bridges plain pub/sub channels
into the stream, at most once (a message published while no consumer listens is lost).
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from redis.exceptions import RedisError

from event_sends import conf, streams
from event_sends.errors import EventRejected
from event_sends.services import event_handle
from mailqueue.liveness import CONSUMER_KEY_TTL_SECONDS, CONSUMERS_KEY
from mailqueue.scheduling import COMMAND_TIMEOUT_SECONDS
from mailqueue.scheduling import connection as redis_connection

logger = logging.getLogger(__name__)

# Outages (Redis or PostgreSQL unreachable): the entry in hand stays unacknowledged and is
# handled again once they are back.
OUTAGES = (RedisError, OperationalError, InterfaceError)
MAX_BACKOFF_SECONDS = 30.0


def consumer_name() -> str:
    """This process's consumer name in the group: unique per host and process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class EventConsumer:
    """One consumer of the events group; `run` loops until `request_stop` (or a signal the
    command turns into it)."""

    def __init__(self, *, name: str | None = None, pubsub_channels: Sequence[str] = ()) -> None:
        self.name = name or consumer_name()
        self.pubsub_channels = list(pubsub_channels)
        # Reads block for up to events_block_seconds: the socket must wait longer than that.
        self.redis = redis_connection(
            timeout=conf.events_block_seconds() + COMMAND_TIMEOUT_SECONDS,
            connect_timeout=COMMAND_TIMEOUT_SECONDS,
        )
        self.key = f"{CONSUMERS_KEY}:{self.name}"
        self.handled = 0
        self._stopping = threading.Event()
        self._registered = False
        self._next_claim = 0.0
        # Each pass scans part of the pending list (XAUTOCLAIM's COUNT); the next goes on from
        # there, so an old abandoned entry is reached behind many live ones.
        self._claim_from = "0-0"

    def request_stop(self) -> None:
        """Stop after the entries in hand (signal-safe: it only sets a flag)."""
        self._stopping.set()

    def run(self, *, max_steps: int | None = None) -> None:
        """Consume until asked to stop (or for `max_steps` reads, in tests); outages are
        retried with a growing delay, each logged, never a crash."""
        bridge = None
        if self.pubsub_channels:
            bridge = threading.Thread(target=self._bridge, name="pubsub-bridge", daemon=True)
            bridge.start()
        logger.info("consume_events %s: reading %s", self.name, conf.events_stream())
        failures = steps = 0
        try:
            while not self._stopping.is_set() and (max_steps is None or steps < max_steps):
                steps += 1
                try:
                    self.step()
                except OUTAGES as exc:
                    failures += 1
                    delay = min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
                    logger.error(
                        "consume_events %s: %s unavailable (%s); retrying in %.0f s (failure %d)",
                        self.name,
                        "Redis" if isinstance(exc, RedisError) else "the database",
                        exc,
                        delay,
                        failures,
                    )
                    self._registered = False
                    if not connection.in_atomic_block:
                        connection.close()  # a broken connection is not reused
                    self._stopping.wait(delay)
                    continue
                if failures:
                    logger.info("consume_events %s: reading again after an outage", self.name)
                failures = 0
        finally:
            self._stopping.set()
            if bridge is not None:
                bridge.join(timeout=5)
            self._unregister()
            logger.info("consume_events %s: stopped, %d entries handled", self.name, self.handled)

    def step(self) -> int:
        """Take over abandoned entries if it is time to, else read new ones; handle them all.

        Returns how many entries were handled (acknowledged or dead-lettered).
        """
        if not connection.in_atomic_block:
            close_old_connections()  # CONN_MAX_AGE, and connections PostgreSQL dropped
        if not self._registered:
            streams.group_ensure(self.redis)
            self._register()
        else:
            self._heartbeat()
        entries = self._claim_if_due()
        if not entries:
            entries = streams.entries_read(
                self.redis,
                consumer=self.name,
                count=conf.events_batch_size(),
                block_ms=int(conf.events_block_seconds() * 1000),
            )
        # The whole batch (at most events_batch_size entries) is finished even when a stop is
        # requested meanwhile: what was read is handled, not left for a take-over.
        for entry in entries:
            self._handle(entry)
        return len(entries)

    def _claim_if_due(self) -> list[streams.StreamEntry]:
        """Entries idle past the claim time, taken over; dead-lettered past max deliveries.
        Also trims handled entries and removes consumers that died with nothing pending."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        idle = conf.events_claim_idle_seconds()
        # Half the idle time: an abandoned entry waits at most 1.5 times it.
        self._next_claim = now + min(max(idle / 2, 0.1), 30.0)
        self._claim_from, claimed = streams.entries_claim(
            self.redis,
            consumer=self.name,
            count=conf.events_batch_size(),
            start_id=self._claim_from,
        )
        streams.stream_trim_handled(self.redis)
        for name in streams.consumers_prune(
            self.redis, keep=self.name, idle_seconds=conf.events_stale_consumer_seconds()
        ):
            logger.info("consume_events %s: removed stale consumer %s", self.name, name)
        keep = []
        for entry in claimed:
            logger.warning("consume_events %s: took over entry %s", self.name, entry.entry_id)
            deliveries = streams.delivery_count(self.redis, entry_id=entry.entry_id)
            if deliveries > conf.events_max_deliveries():
                self._dead_letter(entry, f"Read {deliveries} times without being handled.")
            else:
                keep.append(entry)
        return keep

    def _handle(self, entry: streams.StreamEntry) -> None:
        """Handle one entry: acknowledge it once its emails are committed, dead-letter it when
        it can never make them, leave it pending on an outage or an unexpected error."""
        try:
            outcome = event_handle(raw=entry.raw)
        except EventRejected as exc:
            self._dead_letter(entry, exc.message)
            return
        except OUTAGES:
            raise
        except Exception:
            # A bug, not the event's fault: keep the entry for a retry by a take-over; after
            # events_max_deliveries reads it is dead-lettered rather than retried forever.
            logger.exception(
                "consume_events %s: entry %s failed; left pending", self.name, entry.entry_id
            )
            return
        if outcome.failures:
            self._dead_letter(entry, "; ".join(outcome.failures))
        else:
            streams.entry_ack(self.redis, entry_id=entry.entry_id)
            self.handled += 1
        logger.info(
            "consume_events %s: entry %s: %d email(s) created, %d rule(s) had already handled it",
            self.name,
            entry.entry_id,
            len(outcome.emails),
            outcome.already_handled,
        )

    def _dead_letter(self, entry: streams.StreamEntry, reason: str) -> None:
        # The reason may quote the event's data (an address): it goes to the dead-letter
        # stream, which keeps the event anyway, not to the log.
        streams.entry_dead_letter(self.redis, entry=entry, reason=reason, consumer=self.name)
        self.handled += 1
        logger.warning(
            "consume_events %s: entry %s moved to %s",
            self.name,
            entry.entry_id,
            conf.events_dead_stream(),
        )

    def _bridge(self) -> None:
        """Copy pub/sub messages onto the stream, where the group handles them like any entry
        (so they are de-duplicated and dead-lettered the same way)."""
        failures = 0
        while not self._stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(*self.pubsub_channels)
                failures = 0
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        channel = message["channel"].decode(errors="replace")
                        streams.event_add(self.redis, raw=message["data"], source=channel)
            except RedisError as exc:
                failures += 1
                delay = min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
                logger.error(
                    "consume_events %s: pub/sub unavailable (%s); messages published now are "
                    "lost; subscribing again in %.0f s",
                    self.name,
                    exc,
                    delay,
                )
                self._stopping.wait(delay)
            finally:
                pubsub.close()

    def _register(self) -> None:
        """Announce this consumer (with its host, for health checks) under a key that expires
        unless renewed: a killed consumer stops counting as alive."""
        with self.redis.pipeline() as pipe:
            pipe.hset(
                self.key,
                mapping={"hostname": socket.gethostname(), "birth": time.time()},
            )
            pipe.expire(self.key, CONSUMER_KEY_TTL_SECONDS)
            pipe.sadd(CONSUMERS_KEY, self.key)
            pipe.execute()
        self._registered = True

    def _heartbeat(self) -> None:
        if not self.redis.expire(self.key, CONSUMER_KEY_TTL_SECONDS):
            self._register()  # the key vanished (Redis restarted or flushed)

    def _unregister(self) -> None:
        """Stop counting as alive; leave the group unless entries are still pending under this
        name (deleting the consumer would drop them for good: they must stay claimable)."""
        try:
            with self.redis.pipeline() as pipe:
                pipe.delete(self.key)
                pipe.srem(CONSUMERS_KEY, self.key)
                pipe.execute()
            stream, group = conf.events_stream(), conf.events_group()
            mine = [
                row
                for row in self.redis.xinfo_consumers(stream, group)
                if row["name"] in (self.name, self.name.encode())
            ]
            if mine and not mine[0]["pending"]:
                self.redis.xgroup_delconsumer(stream, group, self.name)
        except RedisError as exc:
            logger.warning("consume_events %s: could not unregister: %s", self.name, exc)
