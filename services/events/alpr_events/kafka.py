"""Kafka at the edge of the events service: the producer that drains the outbox, the check that keeps a
resend from duplicating a record, and the consumer of the compacted watchlist topic.

Delivery: rows leave the outbox in order, one batch at a time (so a partition never sees a later record
overtake an earlier one), through an idempotent producer with acks=all by default. A row is deleted
only once its send future resolved. When a send fails, its rows are marked "attempted"; before such
rows are sent again, the tail of their partitions is read back and rows whose `record_id` header is
already there are deleted instead of re-sent. The same happens at start for rows left attempted by a
crash. Lookback is bounded (`lookback` records per partition), which covers our own in-flight batch
even with other producers writing to the topic at a similar rate.

Errors: connection and timeout errors are retried forever with capped backoff (the outbox holds the
records meanwhile); each failure is counted and logged once per episode, with the broker address but
never credentials.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from alpr_events.outbox import AsyncOutbox, Row
from alpr_events.watchlist import Watchlist
from alpr_shared.kafka import connection_options
from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, SchemaError, WatchlistEntry
from alpr_shared.settings import KafkaSettings

log = get_logger(__name__)

RECORD_ID_HEADER = "alpr-record-id"
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
# How long one read-back of a partition tail may take before the check is retried.
READBACK_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_MIN_S = 10.0
# How often the watchlist follower looks for a watchlist topic that does not exist yet.
TOPIC_POLL_S = 5.0


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    options = connection_options(settings)
    options.update(
        acks="all" if settings.acks == "all" else int(settings.acks),
        enable_idempotence=settings.enable_idempotence,
        compression_type=None if settings.compression == "none" else settings.compression,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
    )
    return options


def describe(settings: KafkaSettings) -> dict[str, object]:
    """What may be logged about the connection: never the password."""
    return {
        "bootstrap": settings.bootstrap,
        "security_protocol": settings.security_protocol,
        "sasl_user": settings.sasl_username if settings.security_protocol.startswith("SASL") else None,
        "acks": settings.acks,
        "idempotence": settings.enable_idempotence,
        "compression": settings.compression,
    }


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST_S

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST_S


class DrainerMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.sent = metrics.counter("kafka_records_total", "Records acknowledged by the broker", ["topic"])
        self.errors = metrics.counter(
            "kafka_errors_total", "Failed Kafka operations (retried with backoff)", ["operation"]
        )
        self.skipped = metrics.counter(
            "outbox_already_delivered_total",
            "Outbox rows found in the topic after an unknown outcome, deleted instead of re-sent",
        )
        self.connected = metrics.gauge("kafka_connected_info", "1 while the producer is connected")
        self.send_seconds = metrics.histogram(
            "kafka_send_seconds", "Time from send to acknowledgement of a batch"
        )
        self.queued = metrics.gauge("outbox_messages_count", "Records waiting in the outbox")
        self.queued_bytes = metrics.gauge("outbox_bytes", "Bytes of record values waiting in the outbox")


class OutboxDrainer:
    """Moves outbox rows to Kafka; the only owner of the producer."""

    def __init__(
        self,
        outbox: AsyncOutbox,
        settings: KafkaSettings,
        metrics: DrainerMetrics,
        *,
        batch: int,
        lookback: int | None = None,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.metrics = metrics
        self.batch = batch
        self.lookback = lookback if lookback is not None else max(2 * batch, 1000)
        self._factory = producer_factory or (lambda: AIOKafkaProducer(**producer_options(settings)))
        self._producer: AIOKafkaProducer | None = None
        self._failing_since: float | None = None
        self.delivered = 0
        # How long a batch may wait for acknowledgements before the producer is replaced.
        self.delivery_timeout_s = max(2 * settings.request_timeout_ms / 1000, DELIVERY_TIMEOUT_MIN_S)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            self.metrics.connected.set(1)
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.metrics.connected.set(0)
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("kafka_producer_close_failed", error=str(exc))

    async def close(self) -> None:
        await self._drop_producer()

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.errors.labels(operation).inc()
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "kafka_unavailable",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}",
                queued=self.outbox.sync.count,
                **describe(self.settings),
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "kafka_recovered",
                outage_s=round(time.monotonic() - self._failing_since, 1),
                queued=self.outbox.sync.count,
            )
            self._failing_since = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Drain until `stopping` is set (and the batch in flight has finished)."""
        backoff = _Backoff()
        while not stopping.is_set():
            rows = await self.outbox.peek(self.batch)
            self._update_gauges()
            if not rows:
                await _wait_any(self.outbox.has_rows, stopping, timeout=1.0)
                continue
            try:
                await self.drain_once(rows)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._failed("send", exc)
                await self._drop_producer()
                await _wait_any(stopping, timeout=backoff.next())
                continue
            backoff.reset()
            self._recovered()

    def _update_gauges(self) -> None:
        self.metrics.queued.set(self.outbox.sync.count)
        self.metrics.queued_bytes.set(self.outbox.sync.bytes)

    async def drain_once(self, rows: list[Row]) -> None:
        """Send one batch; raises on failure after deleting what was acknowledged."""
        producer = await self._ensure_producer()
        if any(r.attempts for r in rows):
            rows = await self._skip_delivered(rows)
            if not rows:
                return
        await self.outbox.mark_attempted([r.seq for r in rows])
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        error: BaseException | None = None
        for row in rows:
            try:
                fut = await producer.send(
                    row.topic, row.value, key=row.key, headers=[(RECORD_ID_HEADER, row.record_id.encode())]
                )
            except (KafkaError, OSError) as exc:
                error = exc
                break
            futures.append(fut)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self.delivery_timeout_s
            )
        except TimeoutError:
            # The producer keeps retrying on its own (same producer id and sequence numbers, so the broker
            # dedupes those); past this deadline we give up on it, and the rows' fate is checked by reading
            # the topic back before they are sent again.
            for fut in futures:
                fut.cancel()
            raise
        acked = []
        for row, result in zip(rows, results, strict=False):
            if isinstance(result, BaseException):
                error = error or result
                continue
            acked.append(row)
        if acked:
            await self.outbox.delete([r.seq for r in acked])
            for row in acked:
                self.metrics.sent.labels(row.topic).inc()
            self.delivered += len(acked)
        self.metrics.send_seconds.observe(time.perf_counter() - started)
        if error is not None:
            raise error

    async def _skip_delivered(self, rows: list[Row]) -> list[Row]:
        """Rows whose record id is not yet in the tail of their topic; deletes the others."""
        wanted = {r.record_id for r in rows if r.attempts}
        found = await asyncio.wait_for(
            find_record_ids(self.settings, {r.topic for r in rows if r.attempts}, wanted, self.lookback),
            READBACK_TIMEOUT_S,
        )
        done = [r for r in rows if r.attempts and r.record_id in found]
        if done:
            await self.outbox.delete([r.seq for r in done])
            self.metrics.skipped.inc(len(done))
            log.info("outbox_already_delivered", rows=len(done))
        return [r for r in rows if r not in done]


async def find_record_ids(
    settings: KafkaSettings, topics: Iterable[str], wanted: set[str], lookback: int
) -> set[str]:
    """Which of `wanted` appear (as the record-id header) in the last `lookback` records of each
    partition of `topics`."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return set()
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - lookback))
        found: set[str] = set()
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for records in batches.values():
                for record in records:
                    for name, value in record.headers or ():
                        if name == RECORD_ID_HEADER and value.decode() in wanted:
                            found.add(value.decode())
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return found
    finally:
        await consumer.stop()


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class WatchlistFollower:
    """Reads the whole compacted watchlist topic (no consumer group: every site needs every entry) and
    keeps following it; applies each record to the `Watchlist`."""

    def __init__(
        self,
        settings: KafkaSettings,
        watchlist: Watchlist,
        metrics: ServiceMetrics,
        on_change: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.watchlist = watchlist
        self.codec: Codec[WatchlistEntry] = Codec(WatchlistEntry, wire="json")
        self.on_change = on_change
        self.records = metrics.counter(
            "watchlist_records_total", "Watchlist topic records applied", ["result"]
        )
        self.errors = metrics.counter(
            "kafka_errors_total", "Failed Kafka operations (retried with backoff)", ["operation"]
        )
        self.caught_up = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = _Backoff()
        logged = False
        while not stopping.is_set():
            try:
                # Returns when stopping, or (topic not created yet) to be called again with a fresh consumer.
                await self._follow(stopping)
            except (KafkaError, OSError, TimeoutError) as exc:
                self.errors.labels("watchlist").inc()
                if not logged:
                    log.warning(
                        "watchlist_topic_unavailable",
                        topic=self.settings.watchlist_topic,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    logged = True
                await _wait_any(stopping, timeout=backoff.next())

    async def _follow(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **connection_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer, stopping)
            if not tps:
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            behind = {tp for tp in tps if ends[tp] > 0}
            if not behind:
                self._mark_caught_up()
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                self._apply(record for records in batches.values() for record in records)
                for tp in list(behind):
                    if await consumer.position(tp) >= ends[tp]:
                        behind.discard(tp)
                        if not behind:
                            self._mark_caught_up()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> list[TopicPartition]:
        topic = self.settings.watchlist_topic
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        # The query service creates the topic with its first entry; until then, nothing to follow. A
        # consumer never learns of a topic created after it started (`topics()` does not refresh the
        # metadata `partitions_for_topic` reads), so the caller looks again with a fresh consumer.
        self._mark_caught_up()
        await _wait_any(stopping, timeout=TOPIC_POLL_S)
        return []

    def _apply(self, records: Iterable[Any]) -> None:
        updates = [u for u in (self._decode(r.key, r.value) for r in records) if u is not None]
        if updates:
            self.watchlist.apply_many(updates)
            self.on_change()

    def _mark_caught_up(self) -> None:
        if not self.caught_up.is_set():
            self.caught_up.set()
            log.info("watchlist_loaded", entries=len(self.watchlist))

    def _decode(self, key: bytes | None, value: bytes | None) -> tuple[str, WatchlistEntry | None] | None:
        if value is None:
            if not key:
                self.records.labels("malformed").inc()
                return None
            self.records.labels("deleted").inc()
            return (key.decode(errors="replace"), None)
        try:
            entry = self.codec.decode(value)
        except SchemaError as exc:
            self.records.labels("malformed").inc()
            log.warning("watchlist_record_dropped", error=str(exc)[:300])
            return None
        self.records.labels("deleted" if entry.deleted else "upserted").inc()
        return (entry.entry_id, entry)
