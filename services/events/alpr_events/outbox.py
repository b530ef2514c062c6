"""The on-disk outbox: every record for Kafka is committed here first and deleted only after the broker
acknowledged it. SQLite in WAL mode, one file, owned by the events service alone.

Tables:
- `outbox`: records in the order they were produced (`seq`), with their topic, key, value and a
  `record_id` ("<event id>:<revision>" or the alert id) that identifies them in the topic. `attempts`
  counts sends whose outcome is unknown; such rows are checked against the topic before they are sent
  again (see `kafka.OutboxDrainer`), which is what keeps a resend from duplicating a record.
- `open_events`: the event builder's state (msgpack of `OpenEventState`), written in the same
  transaction as the records it produced, so a restart continues where the last commit left off.

Bound: past `max_bytes` of queued values, the oldest rows are deleted; the caller counts and logs them.

Shared (`events.delivery: local`): another process on this host (persist with `persist.source: outbox`)
deletes rows once they are stored, so the queued count and bytes are re-read from the file before the bound
is applied rather than kept in memory. SQLite's WAL lets that reader work beside the events writer; each
side waits for the other's short write transaction (`BUSY_TIMEOUT_S`).

Threading: SQLite calls block, so `AsyncOutbox` runs them on one dedicated thread (one connection,
strictly serialised); the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

R = TypeVar("R")

# How long a write waits for the other process's transaction on a shared outbox before it fails.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    record_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS open_events (
    event_id TEXT PRIMARY KEY,
    last_seen_ns INTEGER NOT NULL,
    state BLOB NOT NULL
);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written (disk full, permissions, corrupt file)."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    record_id: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    record_id: str
    created_ns: int
    attempts: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    dropped: int  # oldest rows deleted to stay within max_bytes
    dropped_bytes: int
    queued: int  # rows now in the outbox
    queued_bytes: int


class Outbox:
    """Synchronous outbox on one SQLite connection; use from one thread (see `AsyncOutbox`)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        synchronous: Literal["full", "normal"] = "full",
        shared: bool = False,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.shared = shared
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the events outbox {path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox"
            ).fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(f"events outbox {path} is unusable: {exc}") from exc
        self.count = int(count)
        self.bytes = int(size)

    def close(self) -> None:
        self._db.close()

    def write(
        self,
        records: Sequence[Record],
        states: Sequence[tuple[str, int, bytes]] = (),
        forget: Sequence[str] = (),
    ) -> WriteResult:
        """Append records and store builder state in one transaction; then enforce the size bound."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO outbox (topic, key, value, record_id, created_ns) VALUES (?, ?, ?, ?, ?)",
                [(r.topic, r.key, r.value, r.record_id, r.created_ns) for r in records],
            )
            if states:
                db.executemany(
                    "INSERT INTO open_events (event_id, last_seen_ns, state) VALUES (?, ?, ?) "
                    "ON CONFLICT (event_id) DO UPDATE SET last_seen_ns = excluded.last_seen_ns, state = excluded.state",
                    states,
                )
            if forget:
                db.executemany("DELETE FROM open_events WHERE event_id = ?", [(e,) for e in forget])
            added = sum(len(r.value) for r in records)
            if self.shared:  # another process deletes what it stored: count what is really queued
                count, size = db.execute(
                    "SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox"
                ).fetchone()
                self.count, self.bytes = int(count) - len(records), int(size) - added
            dropped = dropped_bytes = 0
            if self.bytes + added > self.max_bytes:
                dropped, dropped_bytes = self._drop_oldest(self.bytes + added - self.max_bytes)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise OutboxError(f"cannot write to the events outbox {self.path}: {exc}") from exc
        self.count += len(records) - dropped
        self.bytes += added - dropped_bytes
        return WriteResult(dropped, dropped_bytes, self.count, self.bytes)

    def _drop_oldest(self, excess: int) -> tuple[int, int]:
        seqs: list[int] = []
        freed = 0
        for seq, size in self._db.execute("SELECT seq, length(value) FROM outbox ORDER BY seq"):
            if freed >= excess:
                break
            seqs.append(seq)
            freed += size
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        return len(seqs), freed

    def peek(self, limit: int) -> list[Row]:
        """The oldest `limit` rows, in order."""
        cursor = self._db.execute(
            "SELECT seq, topic, key, value, record_id, created_ns, attempts FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [Row(*row) for row in cursor]

    def mark_attempted(self, seqs: Sequence[int]) -> None:
        """Record that these rows are about to be sent (their fate is unknown until deleted)."""
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])
        self._db.execute("COMMIT")

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove acknowledged rows (already-gone rows, e.g. dropped by the bound meanwhile, are fine)."""
        if not seqs:
            return
        self._db.execute("BEGIN")
        freed = 0
        removed = 0
        for seq in seqs:
            row = self._db.execute(
                "DELETE FROM outbox WHERE seq = ? RETURNING length(value)", (seq,)
            ).fetchone()
            if row is not None:
                removed += 1
                freed += int(row[0])
        self._db.execute("COMMIT")
        self.count -= removed
        self.bytes -= freed

    def load_states(self, newer_than_ns: int = 0) -> list[bytes]:
        cursor = self._db.execute("SELECT state FROM open_events WHERE last_seen_ns >= ?", (newer_than_ns,))
        return [bytes(row[0]) for row in cursor]

    def forget_older_than(self, cutoff_ns: int) -> int:
        cursor = self._db.execute("DELETE FROM open_events WHERE last_seen_ns < ?", (cutoff_ns,))
        return cursor.rowcount


class AsyncOutbox:
    """The outbox behind one worker thread; the owner opens it with `open()` and must `close()` it."""

    def __init__(self, outbox: Outbox, executor: ThreadPoolExecutor) -> None:
        self.sync = outbox
        self._executor = executor
        # Set whenever rows are added, so the drainer wakes up without polling.
        self.has_rows = asyncio.Event()
        # Set while the outbox is empty (everything acknowledged), for a graceful stop's flush.
        self.empty = asyncio.Event()
        if outbox.count:
            self.has_rows.set()
        else:
            self.empty.set()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_bytes: int,
        synchronous: Literal["full", "normal"] = "full",
        shared: bool = False,
    ) -> AsyncOutbox:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-outbox")
        try:
            outbox = await asyncio.get_running_loop().run_in_executor(
                executor,
                partial(Outbox, path, max_bytes=max_bytes, synchronous=synchronous, shared=shared),
            )
        except BaseException:
            executor.shutdown(wait=True)
            raise
        return cls(outbox, executor)

    async def _run(self, fn: partial[R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def write(
        self,
        records: Sequence[Record],
        states: Sequence[tuple[str, int, bytes]] = (),
        forget: Sequence[str] = (),
    ) -> WriteResult:
        result = await self._run(partial(self.sync.write, records, states, forget))
        if result.queued:
            self.has_rows.set()
            self.empty.clear()
        return result

    async def peek(self, limit: int) -> list[Row]:
        rows = await self._run(partial(self.sync.peek, limit))
        if not rows:
            self.has_rows.clear()
            # A write may have landed between the query and the clear; look once more.
            rows = await self._run(partial(self.sync.peek, limit))
            if rows:
                self.has_rows.set()
        return rows

    async def mark_attempted(self, seqs: Sequence[int]) -> None:
        await self._run(partial(self.sync.mark_attempted, seqs))

    async def delete(self, seqs: Sequence[int]) -> None:
        await self._run(partial(self.sync.delete, seqs))
        if self.sync.count == 0:
            self.empty.set()

    async def load_states(self, newer_than_ns: int = 0) -> list[bytes]:
        return await self._run(partial(self.sync.load_states, newer_than_ns))

    async def forget_older_than(self, cutoff_ns: int) -> int:
        return await self._run(partial(self.sync.forget_older_than, cutoff_ns))

    async def close(self) -> None:
        try:
            await self._run(partial(self.sync.close))
        finally:
            self._executor.shutdown(wait=True)
