"""`persist.source: outbox` on a real PostgreSQL 15: events written to the events outbox (shared mode) end
up stored once; rows leave the outbox only after the commit; a re-delivery after a crash changes nothing;
undecodable rows become dead letters in the outbox file, alerts are skipped."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from alpr_events.outbox import Outbox, Record
from alpr_persist import migrate
from alpr_persist.consumer import BatchWriter
from alpr_persist.outbox_source import OutboxReader, OutboxSource
from alpr_persist.store import PlateStore, init_connection
from alpr_persist.synthetic import make_event
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, PlateEvent
from alpr_shared.settings import PersistSettings

pytestmark = pytest.mark.integration

TOPIC = "alpr.plates.detected"
CODEC = Codec(PlateEvent, wire="json")


def _records(events: list[PlateEvent]) -> list[Record]:
    return [
        Record(TOPIC, e.camera_id.encode(), CODEC.encode(e), f"{e.event_id}:{e.revision}", time.time_ns())
        for e in events
    ]


async def _run_until_empty(source: OutboxSource, stopping: asyncio.Event, path: Path) -> None:
    task = asyncio.create_task(source.run())
    try:
        deadline = time.monotonic() + 20
        while True:
            with sqlite3.connect(path) as db:
                left = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            if left == 0:
                break
            assert not task.done(), task.exception() if task.done() else None
            assert time.monotonic() < deadline, f"{left} rows still in the outbox"
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def test_outbox_rows_are_stored_once_then_deleted(postgres_db: str, tmp_path: Path) -> None:
    settings = PersistSettings(source="outbox", batch_size=7, outbox_poll_s=0.05)
    conn = await asyncpg.connect(postgres_db)
    try:
        layout = (await migrate.migrate(conn, settings)).layout
    finally:
        await conn.close()
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, max_bytes=1 << 30, shared=True)
    now = time.time_ns()
    events = [make_event(i, jpeg_bytes=64, now_ns=now) for i in range(20)]
    outbox.write(_records(events))
    alert = Record("alpr.alerts", b"k", b'{"type": "watchlist_alert"}', "alert-1", time.time_ns())
    garbage = Record(TOPIC, b"cam-0", b"not json", "bad:1", time.time_ns())
    outbox.write([alert, garbage])
    pool = await asyncpg.create_pool(postgres_db, min_size=1, max_size=2, init=init_connection)
    try:
        metrics = ServiceMetrics("persist")
        stopping = asyncio.Event()
        writer = BatchWriter(PlateStore(pool, settings, layout), settings, metrics, stopping)
        source = OutboxSource(
            path, topic=TOPIC, settings=settings, writer=writer, metrics=metrics, stopping=stopping
        )
        await _run_until_empty(source, stopping, path)
        stored = await pool.fetch("SELECT event_id, revision FROM plate_events")
        assert sorted((r["event_id"], r["revision"]) for r in stored) == sorted(
            (e.event_id, 1) for e in events
        )
        with sqlite3.connect(path) as db:
            dead = db.execute("SELECT record_id, kind FROM persist_dead_letters").fetchall()
        assert dead == [("bad:1", "decode")]
        # A crash after the commit but before the delete: the same rows come back. Nothing changes,
        # and a newer revision that arrives with them wins.
        newer = make_event(3, revision=2, jpeg_bytes=64, now_ns=now)
        outbox.write(_records([*events[:5], newer]))
        stopping2 = asyncio.Event()
        writer2 = BatchWriter(PlateStore(pool, settings, layout), settings, metrics, stopping2)
        source2 = OutboxSource(
            path, topic=TOPIC, settings=settings, writer=writer2, metrics=metrics, stopping=stopping2
        )
        await _run_until_empty(source2, stopping2, path)
        rows = await pool.fetch("SELECT event_id, revision FROM plate_events")
        assert len(rows) == 20
        assert {r["event_id"]: r["revision"] for r in rows}[newer.event_id] == 2
        # The shared outbox re-reads what is really queued (persist deleted everything it wrote).
        outbox.write(_records([make_event(100, now_ns=now)]))
        assert outbox.count == 1
    finally:
        outbox.close()
        await pool.close()


def test_the_reader_says_when_the_outbox_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is events running"):
        OutboxReader(tmp_path / "missing.sqlite3")
