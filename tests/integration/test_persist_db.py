"""Persist's database side on a real PostgreSQL 15: migrations, the idempotent upsert, the rollup,
retention, and the split that isolates a record the database rejects."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import msgspec
import pytest

from alpr_persist import migrate, partitions
from alpr_persist.consumer import BatchWriter, Item
from alpr_persist.rows import ns_to_datetime
from alpr_persist.service import maintain
from alpr_persist.store import PlateStore, init_connection
from alpr_persist.synthetic import make_event
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import PlateEvent
from alpr_shared.settings import PersistSettings

pytestmark = pytest.mark.integration

SETTINGS = PersistSettings()


@pytest.fixture
async def pool(postgres_db: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(postgres_db)
    try:
        await migrate.migrate(conn, SETTINGS)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(postgres_db, min_size=1, max_size=2, init=init_connection)
    try:
        yield pool
    finally:
        await pool.close()


async def test_migrations_apply_to_an_empty_database_and_rerun_as_no_ops(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        before = await migrate.status(conn)
        assert before.current == 0 and before.layout is None and len(before.pending) == before.latest
        first = await migrate.migrate(conn, SETTINGS)
        assert first.layout == "partitioned"  # no TimescaleDB on the test server
        assert first.applied == [m.label for m in migrate.plan("partitioned")]
        assert first.trigram_index  # pg_trgm is in the test server's contrib
        tables = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace"
            )
        }
        for table in (
            "plate_events",
            "plate_event_images",
            "plate_events_hourly",
            "cameras",
            "watchlist_entries",
            "api_keys",
        ):
            assert table in tables
        indexes = {
            r["indexname"]
            for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'plate_events'")
        }
        assert {"plate_events_plate_time", "plate_events_camera_time", "plate_events_plate_trgm"} <= indexes
        today = partitions.today_utc()
        assert {
            today + timedelta(days=d) for d in range(SETTINGS.partition_lead_days + 1)
        } <= await partitions.existing_days(conn, "plate_events")
        schema_before = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        applied_before = await conn.fetch("SELECT version, applied_at FROM alpr_schema_migrations ORDER BY 1")

        again = await migrate.migrate(conn, SETTINGS)
        assert again.applied == [] and again.partitions_created == []
        assert (
            await conn.fetch("SELECT version, applied_at FROM alpr_schema_migrations ORDER BY 1")
            == applied_before
        )
        assert (
            await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            )
            == schema_before
        )
        after = await migrate.status(conn)
        assert after.pending == [] and after.current == after.latest and after.layout == "partitioned"

        # An applied migration that was edited is refused, not silently skipped.
        await conn.execute("UPDATE alpr_schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            await migrate.migrate(conn, SETTINGS)
        # Asking for TimescaleDB on a server without it is a clear error.
        await conn.execute(
            "UPDATE alpr_schema_migrations SET checksum = $1 WHERE version = 1",
            migrate.plan("partitioned")[0].checksum,
        )
        with pytest.raises(migrate.MigrationError, match="partitioned layout"):
            await migrate.migrate(conn, PersistSettings(timeseries="timescaledb"))
    finally:
        await conn.close()


async def test_concurrent_migrations_serialise_on_the_lock(postgres_db: str) -> None:
    conns = [await asyncpg.connect(postgres_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c, SETTINGS) for c in conns))
        assert sorted(len(r.applied) for r in results) == [0, 0, len(migrate.plan("partitioned"))]
    finally:
        for c in conns:
            await c.close()


async def _direct_rollup(pool: asyncpg.Pool) -> dict[tuple[datetime, str], tuple[int, int, int, float]]:
    rows = await pool.fetch(
        """SELECT date_trunc('hour', first_seen, 'UTC') AS bucket, camera_id, count(*) AS n,
                  count(*) FILTER (WHERE format_valid) AS valid, count(*) FILTER (WHERE watchlist <> '{}') AS hits,
                  sum(confidence::float8) AS conf
           FROM plate_events GROUP BY 1, 2"""
    )
    return {(r["bucket"], r["camera_id"]): (r["n"], r["valid"], r["hits"], round(r["conf"], 3)) for r in rows}


async def _rollup(pool: asyncpg.Pool) -> dict[tuple[datetime, str], tuple[int, int, int, float]]:
    rows = await pool.fetch("SELECT * FROM plate_events_hourly WHERE events > 0")
    return {
        (r["bucket"], r["camera_id"]): (
            r["events"],
            r["format_valid"],
            r["watchlist_hits"],
            round(r["confidence_sum"], 3),
        )
        for r in rows
    }


async def test_upsert_is_idempotent_keeps_newest_revision_and_rollup_matches_a_direct_count(
    pool: asyncpg.Pool,
) -> None:
    store = PlateStore(pool, SETTINGS, "partitioned")
    rng = random.Random(3)
    now = datetime.now(UTC)
    now_ns = int(now.timestamp() * 1e9)
    # 600 events over ~3 hours and 4 cameras, each with up to 3 revisions; some carry crops.
    revisions: dict[int, int] = {i: rng.randint(1, 3) for i in range(600)}
    stream: list[PlateEvent] = []
    for i, top in revisions.items():
        for rev in range(1, top + 1):
            event = make_event(
                i, revision=rev, now_ns=now_ns, spread_s=3 * 3600, jpeg_bytes=64 if i % 5 == 0 else 0
            )
            stream.append(msgspec.structs.replace(event, format_valid=(i + rev) % 3 != 0))
    rng.shuffle(stream)  # revisions arrive out of order, some older after newer
    total_inserted = total_updated = 0
    for start in range(0, len(stream), 137):
        result = await store.write(stream[start : start + 137])
        total_inserted += result.inserted
        total_updated += result.updated
    assert total_inserted == 600
    # Redelivery of everything, in other batches, changes nothing.
    for start in range(0, len(stream), 250):
        result = await store.write(stream[start : start + 250])
        assert result.inserted == 0 and result.updated == 0
    stored = {
        r["event_id"]: r["revision"] for r in await pool.fetch("SELECT event_id, revision FROM plate_events")
    }
    assert len(stored) == 600
    for i, top in revisions.items():
        assert stored[make_event(i, now_ns=now_ns, spread_s=3 * 3600).event_id] == top
    assert await _rollup(pool) == await _direct_rollup(pool)
    # Times arrive as ns and are stored exactly to the microsecond.
    sample = make_event(5, now_ns=now_ns, spread_s=3 * 3600)
    stored_first = await pool.fetchval(
        "SELECT first_seen FROM plate_events WHERE event_id = $1", sample.event_id
    )
    assert stored_first == ns_to_datetime(sample.first_seen_ns)
    images = await pool.fetch("SELECT event_id, revision FROM plate_event_images WHERE kind = 'plate'")
    assert len(images) == 120
    assert await pool.fetchval("SELECT count(*) FROM plate_events WHERE has_plate_image") == 120
    cams = await pool.fetch("SELECT camera_id, name, last_event_at FROM cameras ORDER BY 1")
    assert [c["camera_id"] for c in cams] == ["cam-0", "cam-1", "cam-2", "cam-3"]
    assert all(c["name"].startswith("Gate ") for c in cams)


async def _snapshot(pool: asyncpg.Pool) -> tuple[list[asyncpg.Record], ...]:
    """Everything a batch writes, without the columns that say when it was written."""
    events = await pool.fetch(
        """SELECT event_id, first_seen, last_seen, revision, camera_id, site_id, camera_name, plate, plate_raw,
                  region, format_valid, corrected, confidence, track_id, tracks, reads, final, best_shot_at,
                  direction, camera_direction, vehicle_class, latitude, longitude, plate_box, vehicle_box,
                  crossed_line, watchlist, has_plate_image, has_vehicle_image, schema_version, emitted_at
           FROM plate_events ORDER BY event_id"""
    )
    images = await pool.fetch(
        "SELECT event_id, first_seen, kind, revision, jpeg FROM plate_event_images ORDER BY 1, 3"
    )
    cameras = await pool.fetch(
        """SELECT camera_id, site_id, name, latitude, longitude, direction, first_event_at, last_event_at
           FROM cameras ORDER BY 1"""
    )
    rollup = await pool.fetch(
        """SELECT bucket, camera_id, events, format_valid, watchlist_hits, round(confidence_sum::numeric, 3)
           FROM plate_events_hourly ORDER BY 1, 2"""
    )
    return events, images, cameras, rollup


async def test_first_revisions_copied_directly_store_what_the_upsert_stores_and_redelivery_falls_back(
    pool: asyncpg.Pool,
) -> None:
    now_ns = time.time_ns()
    stream = [
        msgspec.structs.replace(
            make_event(i, now_ns=now_ns, spread_s=2 * 3600, jpeg_bytes=32 if i % 4 == 0 else 0),
            latitude=48.1 if i % 3 else None,
            camera_name="" if i % 7 == 0 else f"Gate {i % 4}",
            watchlist=["stolen", 'say "hi"'] if i % 11 == 0 else [],
        )
        for i in range(300)
    ]
    stream += [msgspec.structs.replace(e, revision=2, confidence=0.5) for e in stream[::6]]
    batches = [stream[start : start + 70] for start in range(0, len(stream), 70)]

    snapshots = []
    for copy_first in (True, False):
        await pool.execute("TRUNCATE plate_events, plate_event_images, plate_events_hourly, cameras")
        store = PlateStore(pool, SETTINGS, "partitioned", copy_first_revisions=copy_first)
        total = [await store.write(batch) for batch in batches]
        assert sum(r.inserted for r in total) == 300
        # 3 of the 50 second revisions share the last batch with their first: that row is inserted once.
        assert sum(r.updated for r in total) == 47
        assert sum(r.copy_conflicts for r in total) == 0
        snapshots.append(await _snapshot(pool))
        assert await _rollup(pool) == await _direct_rollup(pool)
    assert snapshots[0] == snapshots[1]

    # A redelivered batch of first revisions meets its own rows: nothing is written twice, the batch
    # goes through the upsert instead, and so do the next few.
    store = PlateStore(pool, SETTINGS, "partitioned")
    again = await store.write(batches[0])
    assert (again.copy_conflicts, again.inserted, again.updated, again.unchanged) == (1, 0, 0, 70)
    assert await _snapshot(pool) == snapshots[1]
    fresh = [make_event(1_000 + i, now_ns=now_ns, spread_s=60) for i in range(20)]
    after = await store.write(fresh)
    assert (after.copy_conflicts, after.inserted) == (0, 20)
    assert await _rollup(pool) == await _direct_rollup(pool)
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == 320


async def test_retention_drops_old_partitions_and_keeps_the_rest(pool: asyncpg.Pool) -> None:
    settings = PersistSettings(retention_days=3, image_retention_days=2, rollup_retention_days=5)
    store = PlateStore(pool, settings, "partitioned")
    today = partitions.today_utc()
    # Write events as they arrived over the last 7 days: each write sees its own "today".
    for age in range(7, -1, -1):
        day = today - timedelta(days=age)
        noon_ns = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1e9) + 12 * 3600 * 10**9
        events = [make_event(age * 100 + i, now_ns=noon_ns, spread_s=60, jpeg_bytes=16) for i in range(10)]
        result = await store.write(events, today=day)
        assert result.inserted == 10
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == 80
    counts = await maintain(pool, settings, store)
    assert counts["dropped"] > 0
    kept_days = {
        r["d"]
        for r in await pool.fetch(
            "SELECT DISTINCT (first_seen AT TIME ZONE 'UTC')::date AS d FROM plate_events"
        )
    }
    assert kept_days == {today - timedelta(days=a) for a in range(3)}
    async with pool.acquire() as conn:
        days = await partitions.existing_days(conn, "plate_events")
        image_days = await partitions.existing_days(conn, "plate_event_images")
    assert min(days) == today - timedelta(days=2)
    assert min(image_days) == today - timedelta(days=1)
    assert max(days) == today + timedelta(days=settings.partition_lead_days)
    image_rows = {
        r["d"]
        for r in await pool.fetch(
            "SELECT DISTINCT (first_seen AT TIME ZONE 'UTC')::date AS d FROM plate_event_images"
        )
    }
    assert image_rows == {today - timedelta(days=a) for a in range(2)}
    oldest_bucket: datetime = await pool.fetchval("SELECT min(bucket) FROM plate_events_hourly")
    assert oldest_bucket.date() >= today - timedelta(days=4)
    # The rollup keeps the hours whose events were dropped (up to its own retention): that is its point.
    assert await pool.fetchval("SELECT sum(events) FROM plate_events_hourly") == 50
    # Events older than the retention are not written back (their partition is gone): counted as expired.
    late = await store.write(
        [make_event(9_999, now_ns=int((datetime.now(UTC) - timedelta(days=6)).timestamp() * 1e9), spread_s=1)]
    )
    assert late.expired == 1 and late.inserted == 0
    # A second pass has nothing to do.
    assert (await maintain(pool, settings, store))["dropped"] == 0


async def test_a_record_the_database_rejects_is_isolated_by_splitting(pool: asyncpg.Pool) -> None:
    # A constraint the Python validation does not know stands in for any data error of the database.
    await pool.execute("ALTER TABLE plate_events ADD CONSTRAINT test_no_poison CHECK (plate <> 'POISON')")
    store = PlateStore(pool, SETTINGS, "partitioned")
    metrics = ServiceMetrics("persist_test")
    writer = BatchWriter(store, SETTINGS, metrics, asyncio.Event())
    events = [make_event(i) for i in range(64)]
    events[37] = msgspec.structs.replace(events[37], plate="POISON")
    items = [Item(tp=None, offset=i, key=None, value=b"", event=e) for i, e in enumerate(events)]
    written, dead = await writer.write(items)
    assert written.inserted == 63
    assert [d.item.offset for d in dead] == [37]
    assert dead[0].kind == "database" and "test_no_poison" in dead[0].reason
    assert await pool.fetchval("SELECT count(*) FROM plate_events") == 63


def test_partition_names_and_cutoff() -> None:
    assert partitions.partition_name("plate_events", date(2025, 3, 9)) == "plate_events_p20250309"
    assert partitions.retention_cutoff(date(2025, 3, 9), 1) == date(2025, 3, 9)
    assert partitions.retention_cutoff(date(2025, 3, 9), 30) == date(2025, 2, 8)


def test_alpr_db_command_migrates_reports_and_exits_by_state(postgres_db: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alpr_shared.cli", "db", *args, "--database-url", postgres_db],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    pending = run("status")
    assert pending.returncode == 3 and "0001_core" in pending.stdout
    migrated = run("migrate")
    assert migrated.returncode == 0 and "layout: partitioned" in migrated.stdout
    again = run("migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    current = run("status")
    assert (
        current.returncode == 0
        and "pending: none" in current.stdout
        and "trigram index: present" in current.stdout
    )
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "alpr_shared.cli",
            "db",
            "status",
            "--database-url",
            "postgresql://u:secret@127.0.0.1:1/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "cannot connect" in refused.stderr and "secret" not in refused.stderr
