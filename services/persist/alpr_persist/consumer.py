"""The Kafka side of persist: batches from the consumer group, dead letters, and offset commits.

Loop: collect up to `batch_size` records or `batch_time_ms` → decode and validate (bad records become
dead letters with a reason) → store the good ones (`PlateStore.write`, retried with backoff while the
database is down; a batch the database rejects is split in halves until the bad record is alone, and
that one becomes a dead letter) → send the dead letters and wait for their acks → commit the offsets.

Offsets are committed only after the database transaction committed and the dead letters were
acknowledged, so a crash anywhere in the loop means the batch is delivered again, and the upsert's
revision check makes that redelivery change nothing.

Pipelining: while one batch is in the database, the loop collects and decodes the next one (Kafka fetch
and JSON decoding cost about as much as the write, so doing them one after the other left the database
idle half the time). Collecting and decoding go in slices of `SLICE_RECORDS` with a yield to the event
loop between them, so the write in flight resumes as soon as the database answers instead of waiting for
a whole batch to be decoded (that wait left the database idle ~20 % of the time). At most one batch is
written at a time and batches are committed in order. While
the database is down the loop holds two batches at most and fetches nothing more (aiokafka's prefetch
buffer is bounded), so consumption pauses and the lag grows in Kafka, not in memory.

A rebalance waits (bounded) for the batch in flight to be committed before the partitions are handed
over; if that wait times out or the commit loses the race, the new owner re-reads the batch — harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from alpr_persist.rows import InvalidEvent, validate
from alpr_persist.store import (
    PlateStore,
    PoisonBatchError,
    RetriableError,
    SchemaProblem,
    StoreError,
    WriteResult,
)
from alpr_shared.kafka import connection_options
from alpr_shared.logging import get_logger
from alpr_shared.metrics import HealthState, ServiceMetrics
from alpr_shared.schemas import SCHEMA_VERSION, Codec, PlateEvent, SchemaError, SchemaVersionError
from alpr_shared.settings import KafkaSettings, PersistSettings

log = get_logger(__name__)

# Headers of a dead letter (the value and key are the original record's bytes).
DLQ_REASON_HEADER = "alpr-dlq-reason"
DLQ_KIND_HEADER = "alpr-dlq-kind"
DLQ_SOURCE_HEADER = "alpr-dlq-source"  # topic/partition/offset of the original record
# How far ahead of this host's clock an event may claim to be before it counts as a wrong edge clock.
MAX_FUTURE_NS = 24 * 3600 * 10**9
# A rebalance waits at most this long for the batch in flight to commit before giving up its partitions.
REBALANCE_WAIT_S = 10.0
# Records unpacked or decoded between two yields to the event loop (~2 ms of work): the write in flight
# resumes as soon as the database answers instead of waiting for a whole batch to be decoded.
SLICE_RECORDS = 500


@dataclass
class Item:
    """One consumed record: where it came from, its bytes, and the event it decoded to (if it did)."""

    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None
    event: PlateEvent | None = None


@dataclass
class DeadLetter:
    item: Item
    kind: str  # decode | version | invalid | database — a bounded metric label
    reason: str


@dataclass
class DecodedBatch:
    """Records collected from the consumer, decoded and validated, waiting for their turn to be written."""

    items: list[Item]
    good: list[Item]
    dead: list[DeadLetter]
    started: float  # monotonic time its first record was taken from the consumer
    decode_s: float
    collect_s: float = 0.0  # waiting for and unpacking the records (debug timings)


@dataclass
class BatchOutcome:
    written: WriteResult = field(default_factory=WriteResult)
    dead: list[DeadLetter] = field(default_factory=list)


# Fast path: one parse straight into PlateEvent. The shared Codec first probes type and version (a second
# parse); it is still used for any record the fast path refuses, to produce its precise error.
_FAST_DECODER = msgspec.json.Decoder(PlateEvent)


def _decode(value: bytes, codec: Codec[PlateEvent]) -> PlateEvent:
    try:
        event = _FAST_DECODER.decode(value)
    except msgspec.DecodeError:
        return codec.decode(value)  # raises the Codec's precise SchemaError
    if event.schema_version != SCHEMA_VERSION:
        return codec.decode(value)  # raises SchemaVersionError naming both versions
    return event


def decode_items(
    items: Sequence[Item], codec: Codec[PlateEvent], *, now_ns: int
) -> tuple[list[Item], list[DeadLetter]]:
    """Decode and validate; returns the good items (with `.event` set) and the dead letters."""
    good: list[Item] = []
    dead: list[DeadLetter] = []
    for item in items:
        if item.value is None:
            dead.append(DeadLetter(item, "decode", "record has no value (a tombstone on the events topic)"))
            continue
        try:
            event = _decode(item.value, codec)
            validate(event, now_ns=now_ns, max_future_ns=MAX_FUTURE_NS)
        except SchemaVersionError as exc:
            dead.append(DeadLetter(item, "version", str(exc)))
        except SchemaError as exc:
            dead.append(DeadLetter(item, "decode", str(exc)))
        except InvalidEvent as exc:
            dead.append(DeadLetter(item, "invalid", str(exc)))
        else:
            item.event = event
            good.append(item)
    return good, dead


class Backoff:
    """Doubling delays from `initial` to `cap`; `reset()` after a success."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class Stopped(Exception):
    """The service is stopping while a batch could not be finished; it is left uncommitted."""


async def _sleep_unless(stopping: asyncio.Event, delay: float) -> None:
    """Sleep `delay` s; raise `Stopped` as soon as `stopping` is set."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=delay)
    except TimeoutError:
        return
    raise Stopped


class BatchWriter:
    """Stores one batch: retries what is retriable, splits what is poisoned. Shared by consumer and bench."""

    def __init__(
        self,
        store: PlateStore,
        settings: PersistSettings,
        metrics: ServiceMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self.store = store
        self.settings = settings
        self.stopping = stopping
        self.health: HealthState = metrics.health
        self._retries = metrics.counter(
            "db_retries_total", "Batch writes retried after a database error", ["kind"]
        )
        self._splits = metrics.counter(
            "batch_splits_total", "Batches split to isolate a record the database rejected"
        )
        self._down_since: float | None = None

    async def write(self, items: Sequence[Item]) -> tuple[WriteResult, list[DeadLetter]]:
        total = WriteResult()
        dead: list[DeadLetter] = []
        await self._write_split(list(items), total, dead)
        return total, dead

    async def _write_split(self, items: list[Item], total: WriteResult, dead: list[DeadLetter]) -> None:
        if not items:
            return
        try:
            total.add(await self._write_retrying(items))
        except PoisonBatchError as exc:
            if len(items) == 1:
                dead.append(DeadLetter(items[0], "database", str(exc)))
                return
            self._splits.inc()
            half = len(items) // 2
            log.warning("batch_split", records=len(items), error=str(exc))
            await self._write_split(items[:half], total, dead)
            await self._write_split(items[half:], total, dead)

    async def _write_retrying(self, items: list[Item]) -> WriteResult:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        events = [i.event for i in items if i.event is not None]
        while True:
            try:
                result = await self.store.write(events)
            except (RetriableError, SchemaProblem) as exc:
                kind = "unavailable" if isinstance(exc, RetriableError) else "schema"
                self._retries.labels(kind).inc()
                self._note_down(kind, exc)
                await _sleep_unless(self.stopping, backoff.next())
                continue
            except StoreError:
                raise
            if self._down_since is not None:
                log.info("database_recovered", down_s=round(time.monotonic() - self._down_since, 1))
                self._down_since = None
                self.health.set_ready("database")
            return result

    def _note_down(self, kind: str, exc: StoreError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            hint = " (run `alpr db migrate`?)" if kind == "schema" else ""
            log.error("database_write_failed", kind=kind, error=str(exc) + hint, retrying=True)
            self.health.set_not_ready("database", f"{kind}: {exc}")
        if kind == "unavailable":
            self.store.forget_partitions()


class PersistConsumer:
    """Runs the consume → store → commit loop until `stopping` is set."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: PersistSettings,
        writer: BatchWriter,
        metrics: ServiceMetrics,
        stopping: asyncio.Event,
        *,
        on_batch: Callable[[BatchOutcome], Awaitable[None]] | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.writer = writer
        self.stopping = stopping
        self.health = metrics.health
        self.codec = Codec(PlateEvent, wire="json")
        self.on_batch = on_batch
        self._in_flight = asyncio.Lock()
        self._events = metrics.counter("events_total", "Plate events by what storing them did", ["outcome"])
        self._dead = metrics.counter("dlq_messages_total", "Records sent to the dead-letter topic", ["kind"])
        self._batch_seconds = metrics.histogram(
            "batch_seconds", "From a batch's first record to its committed offsets"
        )
        self._records = metrics.counter("records_total", "Records consumed from the events topic")
        self._copy_conflicts = metrics.counter(
            "copy_conflicts_total",
            "Batches whose first revisions were stored already (a redelivery): written again by upsert",
        )
        self._commit_failed = metrics.counter(
            "commit_failures_total", "Offset commits lost to a rebalance (the batch is re-read, harmlessly)"
        )
        self._lag = metrics.gauge(
            "consumer_lag_messages", "Records behind the partition's end", ["partition"]
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._last_stored: float | None = None  # when the previous batch left the database (debug timings)
        # Next offset per partition as far as this member has taken records, and the partitions paused
        # because they were caught up (`_pause_caught_up`).
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()

    async def run(self) -> None:
        options = connection_options(self.kafka)
        consumer = AIOKafkaConsumer(
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group stores the topic's whole history, not just new events
            max_poll_records=self.settings.batch_size,
            isolation_level="read_committed",
            **options,
        )
        producer = AIOKafkaProducer(
            acks="all" if self.kafka.acks == "all" else int(self.kafka.acks),
            enable_idempotence=self.kafka.enable_idempotence,
            compression_type=None if self.kafka.compression == "none" else self.kafka.compression,
            **options,
        )
        await self._start(consumer, producer)
        self._consumer, self._producer = consumer, producer
        writing: asyncio.Task[None] | None = None
        try:
            consumer.subscribe([self.kafka.topic], listener=_Listener(self))
            self.health.set_ready("kafka")
            log.info("consuming", topic=self.kafka.topic, group=self.settings.group_id)
            while not self.stopping.is_set():
                collecting = time.monotonic()
                items = await self._collect(consumer)
                if not items:
                    if writing is not None and writing.done() and await self._finished(writing):
                        return
                    continue
                batch = await self._decode(items)
                batch.collect_s = batch.started - collecting
                if writing is not None and await self._finished(writing):
                    return
                writing = asyncio.create_task(self._store(consumer, batch))
                await asyncio.sleep(0)  # let the write reach the database before collecting the next batch
            if writing is not None:
                await self._finished(writing)  # drain: the batch in the database is committed
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Stopped):
                    await writing
            await consumer.stop()
            await producer.stop()

    async def _finished(self, writing: asyncio.Task[None]) -> bool:
        """Wait for the batch being written; True when it was abandoned because the service is stopping."""
        try:
            await writing
        except Stopped:
            return True
        return False

    async def _start(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        for client, name in ((consumer, "consumer"), (producer, "dlq producer")):
            while True:
                try:
                    await client.start()
                    break
                except KafkaError as exc:
                    self.health.set_not_ready("kafka", f"{name}: {exc}")
                    log.warning(
                        "kafka_start_failed", client=name, bootstrap=self.kafka.bootstrap, error=str(exc)
                    )
                    try:
                        await _sleep_unless(self.stopping, backoff.next())
                    except Stopped:
                        await consumer.stop()
                        await producer.stop()
                        raise

    def _pause_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the partitions whose records were all taken (next offset at the high watermark).

        A broker that answers a fetch at the end of a partition at once, empty (noida-db, the test broker,
        does not long-poll), makes aiokafka ask again straight away: ~5,600 fetches a second and ~70 % of
        a core in this process, more in the broker, for as long as any partition is caught up while
        others are not. Kafka waits `fetch_max_wait_ms` instead, so there the pause costs nothing. A
        paused partition is resumed when the next batch starts: its new records wait one batch at most.
        """
        caught_up = []
        assigned = consumer.assignment()
        for tp, position in self._positions.items():
            if tp not in assigned:  # revoked, the new assignment not yet announced
                continue
            high = consumer.highwater(tp)
            if high is not None and position >= high and tp not in self._paused:
                caught_up.append(tp)
        if caught_up:
            consumer.pause(*caught_up)
            self._paused.update(caught_up)

    def _resume_paused(self, consumer: AIOKafkaConsumer) -> None:
        if self._paused:
            assigned = consumer.assignment()
            consumer.resume(*(tp for tp in self._paused if tp in assigned))
            self._paused.clear()

    def forget_positions(self) -> None:
        """After a rebalance: the pauses went with the old assignment, positions may have moved."""
        self._positions.clear()
        self._paused.clear()

    async def _collect(self, consumer: AIOKafkaConsumer) -> list[Item]:
        items: list[Item] = []
        deadline: float | None = None
        limit = self.settings.batch_size
        self._resume_paused(consumer)
        while len(items) < limit and not self.stopping.is_set():
            now = time.monotonic()
            if deadline is None:
                timeout_ms = 200  # idle: wake up regularly to notice `stopping`
            else:
                timeout_ms = int((deadline - now) * 1000)
                if timeout_ms <= 0:
                    break
            # Buffered records come back without a suspension: take them in slices and yield in between.
            batches = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=min(limit - len(items), SLICE_RECORDS)
            )
            for tp, records in batches.items():
                items.extend(Item(tp, r.offset, r.key, r.value) for r in records)
                if records:
                    self._positions[tp] = records[-1].offset + 1
            self._pause_caught_up(consumer)
            if items and deadline is None:
                deadline = time.monotonic() + self.settings.batch_time_ms / 1000
            if not items:
                return items
            await asyncio.sleep(0)
        return items

    async def _decode(self, items: list[Item]) -> DecodedBatch:
        started = time.monotonic()
        self._records.inc(len(items))
        now_ns = time.time_ns()
        good: list[Item] = []
        dead: list[DeadLetter] = []
        for start in range(0, len(items), SLICE_RECORDS):
            if start:
                await asyncio.sleep(0)
            ok, bad = decode_items(items[start : start + SLICE_RECORDS], self.codec, now_ns=now_ns)
            good += ok
            dead += bad
        return DecodedBatch(items, good, dead, started, time.monotonic() - started)

    async def _store(self, consumer: AIOKafkaConsumer, batch: DecodedBatch) -> None:
        """Write, send dead letters, commit; raises `Stopped` if the service stops while it retries."""
        async with self._in_flight:
            try:
                await self._handle(consumer, batch)
            except Stopped:
                log.warning(
                    "batch_abandoned", records=len(batch.items), reason="stopping; it will be re-read"
                )
                raise

    async def _handle(self, consumer: AIOKafkaConsumer, batch: DecodedBatch) -> None:
        items, good, dead = batch.items, batch.good, list(batch.dead)
        waited = time.monotonic()
        written, db_dead = await self.writer.write(good)
        stored = time.monotonic()
        # The database had no write of ours between the previous batch and this one (the pipeline's gap).
        idle_s = waited - self._last_stored if self._last_stored is not None else 0.0
        self._last_stored = stored
        dead += db_dead
        await self._send_dead(dead)
        await self._commit(consumer, items)
        log.debug(
            "batch_done",
            records=len(items),
            collect_ms=round(batch.collect_s * 1000, 1),
            decode_ms=round(batch.decode_s * 1000, 1),
            db_idle_ms=round(idle_s * 1000, 1),
            store_ms=round((stored - waited) * 1000, 1),
            commit_ms=round((time.monotonic() - stored) * 1000, 1),
        )
        self._events.labels("inserted").inc(written.inserted)
        self._events.labels("updated").inc(written.updated)
        self._events.labels("unchanged").inc(written.unchanged)
        self._events.labels("expired").inc(written.expired)
        self._copy_conflicts.inc(written.copy_conflicts)
        self._batch_seconds.observe(time.monotonic() - batch.started)
        self._update_lag(consumer, items)
        if self.on_batch is not None:
            await self.on_batch(BatchOutcome(written, dead))

    async def _send_dead(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        producer = self._producer
        if producer is None:
            raise RuntimeError("dead letters before the producer started")
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                futures = [
                    await producer.send(
                        self.settings.dlq_topic,
                        value=d.item.value,
                        key=d.item.key,
                        headers=[
                            (DLQ_KIND_HEADER, d.kind.encode()),
                            (DLQ_REASON_HEADER, d.reason.encode()[:4000]),
                            (
                                DLQ_SOURCE_HEADER,
                                f"{d.item.tp.topic}/{d.item.tp.partition}/{d.item.offset}".encode(),
                            ),
                        ],
                    )
                    for d in dead
                ]
                await asyncio.gather(*futures)
                break
            except KafkaError as exc:
                log.warning("dlq_send_failed", topic=self.settings.dlq_topic, error=str(exc), retrying=True)
                await _sleep_unless(self.stopping, backoff.next())
        for d in dead:
            self._dead.labels(d.kind).inc()
        log.warning(
            "dead_letters_sent",
            topic=self.settings.dlq_topic,
            count=len(dead),
            first_reason=dead[0].reason,
            kinds=sorted({d.kind for d in dead}),
        )

    async def _commit(self, consumer: AIOKafkaConsumer, items: Sequence[Item]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for item in items:
            offsets[item.tp] = max(offsets.get(item.tp, 0), item.offset + 1)
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The partitions moved to another member; it re-reads the batch, and the upsert makes that a no-op.
                self._commit_failed.inc()
                log.warning("commit_lost_to_rebalance", error=str(exc))
                return
            except KafkaError as exc:
                log.warning("commit_failed", error=str(exc), retrying=True)
                await _sleep_unless(self.stopping, backoff.next())
            else:
                return

    def _update_lag(self, consumer: AIOKafkaConsumer, items: Sequence[Item]) -> None:
        for tp in {i.tp for i in items}:
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = max(i.offset for i in items if i.tp == tp) + 1
            except ValueError:
                continue
            self._lag.labels(str(tp.partition)).set(max(high - position, 0))

    async def wait_in_flight(self, timeout: float) -> bool:
        """Wait until no batch is being handled (or `timeout`); True if none is."""
        try:
            async with asyncio.timeout(timeout):
                async with self._in_flight:
                    return True
        except TimeoutError:
            return False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka ships no type information
    def __init__(self, owner: PersistConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked and not await self.owner.wait_in_flight(REBALANCE_WAIT_S):
            log.warning("rebalance_without_commit", partitions=len(revoked), waited_s=REBALANCE_WAIT_S)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner.forget_positions()
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
