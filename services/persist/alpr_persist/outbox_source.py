"""`persist.source: outbox`: plate events taken straight from the events service's SQLite outbox.

What `alpr run` uses when there is no broker: events writes its records to the outbox as always
(`events.delivery: local` stops it from sending them anywhere) and this source takes them from the same
file, a second connection beside the events writer (SQLite WAL). Everything after the source is persist's
own code: the same decoding and validation (`decode_items`), the same `BatchWriter` (retries while the
database is down, poisoned batches split), the same idempotent upsert.

Crash safety, the one rule: a row is deleted from the outbox only after the database transaction that
stored it committed, and the delete (with any dead letters, which go to the outbox file's
`persist_dead_letters` table) is one SQLite transaction. A SIGKILL of persist between the two leaves the
rows in place; the next start stores them again, and the upsert's revision check makes that a no-op. A
SIGKILL of events loses nothing here either: its records and builder state commit together.

Records of other topics (watchlist alerts, which go to webhooks) have no table in the store; they are
deleted with the batch and counted (`alpr_persist_outbox_skipped_total`).

Must never: delete a row before its batch committed, or hold the SQLite write lock across a database call.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from aiokafka import TopicPartition

from alpr_persist.consumer import BatchWriter, DeadLetter, Item, Stopped, _sleep_unless, decode_items
from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, PlateEvent
from alpr_shared.settings import PersistSettings

log = get_logger(__name__)

R = TypeVar("R")

# Where an outbox row "came from", for dead letters and logs (the row's seq is its offset).
OUTBOX_PARTITION = TopicPartition("outbox", 0)
# How long a statement waits for the events writer's transaction before it fails.
BUSY_TIMEOUT_S = 30.0

_DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS persist_dead_letters (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB,
    record_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    dead_at_ns INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    record_id: str


class OutboxReader:
    """Blocking access to the outbox file; one connection, used from one thread (see `OutboxSource`)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            # events creates it; waiting for events would hide a wrong path, so say so plainly.
            raise FileNotFoundError(f"the events outbox {path} does not exist (is events running?)")
        self.path = path
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_DEAD_LETTERS)
        except sqlite3.Error:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def take(self, limit: int) -> list[OutboxRow]:
        """The oldest `limit` rows, in order (they stay until `settle` deletes them)."""
        cursor = self._db.execute(
            "SELECT seq, topic, key, value, record_id FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [OutboxRow(int(s), str(t), k, bytes(v), str(r)) for s, t, k, v, r in cursor]

    def backlog(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def settle(self, seqs: Sequence[int], dead: Sequence[tuple[OutboxRow, str, str]]) -> None:
        """Delete stored rows and file the dead letters, in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time_ns()
            db.executemany(
                "INSERT OR REPLACE INTO persist_dead_letters "
                "(seq, topic, key, value, record_id, kind, reason, dead_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.seq, r.topic, r.key, r.value, r.record_id, kind, reason, now)
                    for r, kind, reason in dead
                ],
            )
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


class OutboxSource:
    """Runs the outbox → store → delete loop until `stopping` is set."""

    def __init__(
        self,
        path: Path,
        *,
        topic: str,
        settings: PersistSettings,
        writer: BatchWriter,
        metrics: ServiceMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self.path = path
        self.topic = topic
        self.settings = settings
        self.writer = writer
        self.stopping = stopping
        self.codec = Codec(PlateEvent, wire="json")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persist-outbox")
        self._reader: OutboxReader | None = None
        self._events = metrics.counter("events_total", "Plate events by what storing them did", ["outcome"])
        self._dead = metrics.counter(
            "dlq_messages_total", "Records filed as dead letters (outbox: persist_dead_letters)", ["kind"]
        )
        self._records = metrics.counter("records_total", "Records taken from the source")
        self._skipped = metrics.counter(
            "outbox_skipped_total", "Outbox records of other topics (alerts), deleted unstored", ["topic"]
        )
        self._batch_seconds = metrics.histogram(
            "batch_seconds", "From a batch's first record to its rows deleted from the outbox"
        )
        self._backlog = metrics.gauge("outbox_backlog_messages", "Records waiting in the events outbox")
        self._warned_topics: set[str] = set()

    async def _run(self, fn: partial[R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _open(self) -> OutboxReader:
        delay = self.settings.retry_initial_s
        while True:
            try:
                return await self._run(partial(OutboxReader, self.path))
            except (FileNotFoundError, sqlite3.Error) as exc:
                log.warning("outbox_unavailable", path=str(self.path), error=str(exc), retry_in_s=delay)
                await _sleep_unless(self.stopping, delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    async def run(self) -> None:
        try:
            reader = await self._open()
        except Stopped:
            self._executor.shutdown(wait=True)
            return
        self._reader = reader
        log.info("consuming_outbox", path=str(self.path), topic=self.topic)
        try:
            while not self.stopping.is_set():
                rows = await self._run(partial(reader.take, self.settings.batch_size))
                if not rows:
                    self._backlog.set(0)
                    try:
                        await _sleep_unless(self.stopping, self.settings.outbox_poll_s)
                    except Stopped:
                        return
                    continue
                try:
                    await self.handle(reader, rows)
                except Stopped:
                    log.warning(
                        "batch_abandoned", records=len(rows), reason="stopping; it stays in the outbox"
                    )
                    return
        finally:
            await self._run(partial(reader.close))
            self._executor.shutdown(wait=True)

    async def handle(self, reader: OutboxReader, rows: list[OutboxRow]) -> None:
        started = time.monotonic()
        self._records.inc(len(rows))
        ours = [r for r in rows if r.topic == self.topic]
        for other in {r.topic for r in rows} - {self.topic}:
            count = sum(1 for r in rows if r.topic == other)
            self._skipped.labels(other).inc(count)
            if other not in self._warned_topics:
                self._warned_topics.add(other)
                log.info("outbox_topic_skipped", topic=other, reason="only plate events are stored")
        by_seq = {r.seq: r for r in ours}
        items = [Item(OUTBOX_PARTITION, r.seq, r.key, r.value) for r in ours]
        good, dead = decode_items(items, self.codec, now_ns=time.time_ns())
        written, db_dead = await self.writer.write(good)
        dead += db_dead
        await self._run(partial(reader.settle, [r.seq for r in rows], [_dead_row(by_seq, d) for d in dead]))
        for d in dead:
            self._dead.labels(d.kind).inc()
        if dead:
            log.warning(
                "dead_letters_filed",
                table="persist_dead_letters",
                outbox=str(self.path),
                count=len(dead),
                first_reason=dead[0].reason,
            )
        self._events.labels("inserted").inc(written.inserted)
        self._events.labels("updated").inc(written.updated)
        self._events.labels("unchanged").inc(written.unchanged)
        self._events.labels("expired").inc(written.expired)
        self._batch_seconds.observe(time.monotonic() - started)
        backlog: int = await self._run(partial(reader.backlog))
        self._backlog.set(backlog)


def _dead_row(by_seq: dict[int, OutboxRow], dead: DeadLetter) -> tuple[OutboxRow, str, str]:
    return by_seq[dead.item.offset], dead.kind, dead.reason[:4000]
