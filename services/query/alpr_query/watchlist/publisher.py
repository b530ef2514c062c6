"""Publishes watchlist changes to the compacted Kafka topic the edge's events services follow.

Record format (what `alpr_events.kafka.WatchlistFollower` consumes): key = entry id (UTF-8); value =
`schemas.WatchlistEntry` as JSON (`Codec(WatchlistEntry, wire="json")`) for a live entry, a null value
(tombstone) for a deleted one, so compaction eventually forgets it.

A change is stored first (the database is the source of truth), then published:
- in the request, under a per-process lock, by reading the entry's current row back (so two quick
  changes of one entry reach the topic in the order they were stored), with `query.publish_timeout_s`;
- if the broker does not acknowledge in time, the change stays marked unpublished and the request still
  succeeds (`published: "pending"`); `run()` retries unpublished changes every
  `query.republish_interval_s`, and at start (changes made while the service or the broker was down);
- with `query.watchlist_publish: false` (embedded mode without a broker) nothing is sent: each change is
  logged as `watchlist_publish_skipped` and answered with `published: "disabled"`.

The topic is created on first use if missing: one partition (total order; a watchlist is small),
`cleanup.policy=compact`, the broker's default replication.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from alpr_query.watchlist.repository import WatchlistRepository
from alpr_shared.kafka import connection_options
from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, WatchlistEntry, watchlist_entry_from_row
from alpr_shared.settings import KafkaSettings

log = get_logger("alpr.query.watchlist")

Outcome = Literal["sent", "pending", "disabled"]
# Unpublished changes handled per retry round.
RETRY_BATCH = 500
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
_STOP_TIMEOUT_S = 10.0


def record(row: Any) -> tuple[bytes, bytes | None]:
    """The (key, value) of a watchlist row: a JSON `WatchlistEntry`, or a tombstone when it is deleted."""
    key = str(row["entry_id"]).encode()
    entry = watchlist_entry_from_row(row)
    return key, None if entry is None else _codec.encode(entry)


_codec: Codec[WatchlistEntry] = Codec(WatchlistEntry, wire="json")


class WatchlistPublisher:
    """The only owner of the query service's Kafka producer."""

    def __init__(
        self,
        repo: WatchlistRepository,
        kafka: KafkaSettings,
        metrics: ServiceMetrics,
        *,
        enabled: bool,
        timeout_s: float,
        interval_s: float,
    ) -> None:
        self.repo = repo
        self.kafka = kafka
        self.enabled = enabled
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self._producer: AIOKafkaProducer | None = None
        self._topic_ready = False
        self._lock = asyncio.Lock()
        self._failing = False
        self.published = metrics.counter(
            "watchlist_published_total", "Watchlist changes sent to Kafka, by outcome", ["outcome"]
        )
        self.pending = metrics.gauge("watchlist_pending_count", "Watchlist changes not yet acknowledged")

    @property
    def topic(self) -> str:
        return self.kafka.watchlist_topic

    async def publish(self, entry_id: str) -> Outcome:
        """Send the entry's current state; never raises for a broker problem (the change stays pending)."""
        if not self.enabled:
            self.published.labels("skipped").inc()
            log.info("watchlist_publish_skipped", entry_id=entry_id, reason="query.watchlist_publish is off")
            return "disabled"
        async with self._lock:
            return await self._publish_locked(entry_id)

    async def _publish_locked(self, entry_id: str) -> Outcome:
        row = await self.repo.get(entry_id, deleted=True)
        if row is None:
            return "sent"  # nothing stored under that id: nothing to tell the edge
        key, value = record(row)
        try:
            await asyncio.wait_for(self._send(key, value), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.published.labels("failed").inc()
            if not self._failing:
                log.warning(
                    "watchlist_publish_failed",
                    topic=self.topic,
                    bootstrap=self.kafka.bootstrap,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_every_s=self.interval_s,
                )
                self._failing = True
            await self._drop_producer()
            return "pending"
        if self._failing:
            log.info("watchlist_publish_recovered", topic=self.topic)
            self._failing = False
        self.published.labels("sent").inc()
        await self.repo.mark_published(entry_id, row["updated_at"])
        return "sent"

    async def _send(self, key: bytes, value: bytes | None) -> None:
        producer = await self._ensure_producer()
        await producer.send_and_wait(self.topic, value, key=key)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if not self._topic_ready:
            await self._ensure_topic()
            self._topic_ready = True
        if self._producer is None:
            options = connection_options(self.kafka)
            producer = AIOKafkaProducer(
                **options,
                acks="all" if self.kafka.acks == "all" else int(self.kafka.acks),
                enable_idempotence=self.kafka.enable_idempotence,
                compression_type=None if self.kafka.compression == "none" else self.kafka.compression,
                linger_ms=0,  # one record per change: nothing to batch, so do not wait
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**connection_options(self.kafka))
        await admin.start()
        try:
            if self.topic in await admin.list_topics():
                return
            brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
            topic = NewTopic(
                self.topic,
                num_partitions=1,
                replication_factor=min(3, brokers),
                topic_configs={"cleanup.policy": "compact"},
            )
            try:
                response = await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                return
            for name, code, message in getattr(response, "topic_errors", ()):
                if code not in (0, _TOPIC_EXISTS):
                    raise KafkaError(f"creating topic {name!r} failed: error {code} {message}")
            log.info("watchlist_topic_created", topic=self.topic, cleanup_policy="compact")
        finally:
            await admin.close()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._topic_ready = False
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), _STOP_TIMEOUT_S)

    async def flush_pending(self) -> int:
        """Publish every stored change the broker has not acknowledged; returns how many are left."""
        ids = await self.repo.unpublished(RETRY_BATCH)
        left = len(ids)
        for entry_id in ids:
            async with self._lock:
                if await self._publish_locked(entry_id) != "sent":
                    break
            left -= 1
        self.pending.set(left)
        return left

    async def run(self, stopping: asyncio.Event) -> None:
        """Retry unpublished changes until `stopping` is set (does nothing when publishing is off)."""
        if not self.enabled:
            unpublished = len(await self.repo.unpublished(RETRY_BATCH))
            if unpublished:
                log.info(
                    "watchlist_not_published", entries=unpublished, reason="query.watchlist_publish is off"
                )
            return
        while not stopping.is_set():
            try:
                await self.flush_pending()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The database (broker errors are handled inside); the next round tries again.
                log.warning("watchlist_retry_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_s)

    async def close(self) -> None:
        await self._drop_producer()
