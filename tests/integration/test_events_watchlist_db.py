"""`events.watchlist_source: database` on a real PostgreSQL 15: entries written by the query service's own
repository (create, change, soft delete, bring back) reach the events `Watchlist` within a poll; a database
that stops keeps the last known list in force and is followed again once it is back; a schema that does
not exist yet (events starts before persist migrates, in `alpr run`) is waited for. And `alpr events` as a
process without a broker (`delivery: local`, as in `alpr run`): an entry added at run time flags the next
passage of its plate (alert in the outbox), and once deleted no longer does."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import yaml

from alpr_events.synthetic import make_read
from alpr_events.watchlist import Watchlist
from alpr_events.watchlist_db import WatchlistPoller
from alpr_persist import migrate
from alpr_query.db import Database
from alpr_query.watchlist.repository import EntryData, WatchlistRepository
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, PlateEvent, WatchlistAlert, WatchlistEntry
from alpr_shared.settings import PersistSettings
from tests.harness.postgres import PostgresServer, unique_database_name
from tests.integration.test_events_kafka import T0, Coordinator, EventsProcess, free_port

pytestmark = pytest.mark.integration

POLL_S = 0.1


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, PersistSettings())
    finally:
        await conn.close()


@asynccontextmanager
async def _repository(dsn: str) -> AsyncIterator[WatchlistRepository]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield WatchlistRepository(Database(pool))
    finally:
        await pool.close()


@asynccontextmanager
async def _polling(poller: WatchlistPoller) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    task = asyncio.create_task(poller.run(stopping))
    try:
        yield stopping
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


def _poller(dsn: str, watchlist: Watchlist, metrics: ServiceMetrics, changes: list[int]) -> WatchlistPoller:
    return WatchlistPoller(
        dsn,
        watchlist,
        metrics,
        lambda: changes.append(len(watchlist)),
        poll_s=POLL_S,
        command_timeout_s=5.0,
        retry_max_s=0.5,
    )


async def _until(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def _labels(watchlist: Watchlist, plate: str) -> list[str]:
    return sorted(h.entry.label for h in watchlist.hits(plate))


def _value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"alpr_events_{name}", labels)
    return 0.0 if value is None else value


async def test_created_changed_and_deleted_entries_reach_the_watchlist(postgres_db: str) -> None:
    await _migrate(postgres_db)
    configured = [
        WatchlistEntry(entry_id="cfg-1", plate="CFG111", label="configured"),
        WatchlistEntry(entry_id="shared", plate="SHR222", label="from-config"),
    ]
    watchlist = Watchlist(configured)
    metrics = ServiceMetrics("events")
    changes: list[int] = []
    async with _repository(postgres_db) as repo:
        # An entry stored before events starts is there after the first poll.
        await repo.create("stolen-1", EntryData("ABC123", "stolen", "exact", 0, "a note"))
        poller = _poller(postgres_db, watchlist, metrics, changes)
        async with _polling(poller):
            await asyncio.wait_for(poller.caught_up.wait(), 10)
            assert _labels(watchlist, "ABC123") == ["stolen"]
            assert _labels(watchlist, "CFG111") == ["configured"]
            assert len(watchlist) == 3

            # Created at run time, fuzzy.
            await repo.create("wanted-1", EntryData("XYZ789", "wanted", "fuzzy", 1, ""))
            await _until("fuzzy entry applied", lambda: _labels(watchlist, "XYZ788") == ["wanted"])
            assert [h.distance for h in watchlist.hits("XYZ788")] == [1]

            # Changed: the new label replaces the old one.
            await repo.put("stolen-1", EntryData("ABC123", "stolen-vehicle", "exact", 0, ""))
            await _until("label changed", lambda: _labels(watchlist, "ABC123") == ["stolen-vehicle"])

            # The same id as a configured entry: the database's version replaces it.
            await repo.put("shared", EntryData("SHR222", "from-api", "exact", 0, ""))
            await _until("config entry replaced", lambda: _labels(watchlist, "SHR222") == ["from-api"])

            # Soft deletes remove entries, the configured one of that id too (as a tombstone would).
            assert await repo.delete("stolen-1") is not None
            assert await repo.delete("shared") is not None
            await _until(
                "entries deleted", lambda: not watchlist.hits("ABC123") and not watchlist.hits("SHR222")
            )
            assert _labels(watchlist, "CFG111") == ["configured"]
            assert sorted(e.entry_id for e in watchlist.entries()) == ["cfg-1", "wanted-1"]

            # Brought back after its deletion.
            await repo.create("stolen-1", EntryData("ABC123", "stolen-again", "exact", 0, ""))
            await _until("entry restored", lambda: _labels(watchlist, "ABC123") == ["stolen-again"])

            # A row removed by hand (not through the API) is removed as well.
            await repo.db.pool.execute("DELETE FROM watchlist_entries WHERE entry_id = 'wanted-1'")
            await _until("vanished row removed", lambda: not watchlist.hits("XYZ789"))

            # An unchanged table is not read again: polls go on, nothing is applied.
            applied = len(changes)
            polls = poller.polls
            await _until("more polls", lambda: poller.polls >= polls + 5)
            assert len(changes) == applied
    # Upserts: stolen-1 at start, wanted-1, stolen-1 changed, shared, stolen-1 back; configured ones not counted.
    assert _value(metrics, "watchlist_records_total", result="upserted") == 5
    assert _value(metrics, "watchlist_records_total", result="deleted") == 3
    assert _value(metrics, "database_errors_total", operation="watchlist") == 0
    assert poller._conn is None  # closed when run() returned


async def test_a_stopped_database_keeps_the_last_list_and_is_followed_again(
    make_postgres_server: Callable[..., PostgresServer],
) -> None:
    # synchronous_commit on: the harness's default (off) may lose the last commits to an immediate stop.
    server = make_postgres_server(settings={"synchronous_commit": "on"})
    dsn = server.create_database(unique_database_name())
    await _migrate(dsn)
    watchlist = Watchlist()
    metrics = ServiceMetrics("events")
    changes: list[int] = []
    async with _repository(dsn) as repo:
        await repo.create("stolen-1", EntryData("ABC123", "stolen", "exact", 0, ""))
    poller = _poller(dsn, watchlist, metrics, changes)
    async with _polling(poller):
        await asyncio.wait_for(poller.caught_up.wait(), 10)
        assert _labels(watchlist, "ABC123") == ["stolen"]

        await asyncio.to_thread(server.kill)  # clients cut off, no goodbye
        await _until(
            "errors counted", lambda: _value(metrics, "database_errors_total", operation="watchlist") >= 2
        )
        assert _labels(watchlist, "ABC123") == ["stolen"], "the last known list stays in force"
        assert poller.caught_up.is_set()

        await asyncio.to_thread(server.start)
        async with _repository(dsn) as repo:
            await repo.create("wanted-1", EntryData("XYZ789", "wanted", "exact", 0, ""))
        await _until("change after the outage applied", lambda: _labels(watchlist, "XYZ789") == ["wanted"])
        assert _labels(watchlist, "ABC123") == ["stolen"]
        assert poller._failing_since is None


async def test_a_missing_schema_is_waited_for(postgres_db: str) -> None:
    watchlist = Watchlist()
    metrics = ServiceMetrics("events")
    poller = _poller(postgres_db, watchlist, metrics, [])
    async with _polling(poller):
        await _until(
            "missing table noticed",
            lambda: _value(metrics, "database_errors_total", operation="watchlist_schema") >= 1,
        )
        assert not poller.caught_up.is_set()
        await _migrate(postgres_db)
        async with _repository(postgres_db) as repo:
            await repo.create("stolen-1", EntryData("ABC123", "stolen", "exact", 0, ""))
        await _until(
            "entry applied once the schema exists", lambda: _labels(watchlist, "ABC123") == ["stolen"]
        )
        assert poller.caught_up.is_set()


def _outbox(path: Path, topic: str) -> list[bytes]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT value FROM outbox WHERE topic = ? ORDER BY seq", (topic,)).fetchall()
    db.close()
    return [bytes(r[0]) for r in rows]


async def test_an_entry_added_at_run_time_flags_the_next_passage(postgres_db: str, tmp_path: Path) -> None:
    await _migrate(postgres_db)
    (tmp_path / "run").mkdir()
    outbox = tmp_path / "outbox.sqlite3"
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(tmp_path / "run"),
                "log": {"format": "json", "level": "info"},
                "cameras": [
                    {"id": f"gate-{i}", "source": f"gate-{i}.mp4", "regions": ["gb"]} for i in (1, 2, 3)
                ],
                "database": {"url": postgres_db},
                "events": {
                    "outbox_path": str(outbox),
                    "delivery": "local",
                    "watchlist_source": "database",
                    "watchlist_poll_s": 0.2,
                },
            }
        )
    )
    alerts_codec = Codec(WatchlistAlert, wire="json")
    coordinator = Coordinator(f"ipc://{tmp_path / 'run' / 'plate-reads.sock'}")
    proc = EventsProcess(config, free_port())
    try:
        proc.start()
        proc.wait_for("watchlist_loaded")
        # A passage before the entry exists: no alert.
        coordinator.send(make_read("gate-1", 1, "XY34ZZZ", first_seen_ns=T0))
        async with _repository(postgres_db) as repo:
            await repo.create("q1", EntryData("XY34ZZZ", "bolo", "exact", 0, ""))
            await _until("entry applied", lambda: proc.metric("alpr_events_watchlist_entries_count") == 1)
            coordinator.send(make_read("gate-2", 1, "XY34ZZZ", first_seen_ns=T0))
            await _until("alert written", lambda: len(_outbox(outbox, "alpr.alerts")) == 1)

            await repo.delete("q1")
            await _until("entry removed", lambda: proc.metric("alpr_events_watchlist_entries_count") == 0)
            coordinator.send(make_read("gate-3", 1, "XY34ZZZ", first_seen_ns=T0))
            await _until("third event written", lambda: len(_outbox(outbox, "alpr.plates.detected")) == 3)
        assert proc.metric("alpr_events_alerts_total") == 1
    finally:
        code = proc.stop()
        coordinator.close()
    assert code == 0
    [alert] = [alerts_codec.decode(v) for v in _outbox(outbox, "alpr.alerts")]
    assert (alert.entry_id, alert.label, alert.camera_id, alert.plate) == ("q1", "bolo", "gate-2", "XY34ZZZ")
    events = [Codec(PlateEvent, wire="json").decode(v) for v in _outbox(outbox, "alpr.plates.detected")]
    assert {e.camera_id: e.watchlist for e in events} == {"gate-1": [], "gate-2": ["bolo"], "gate-3": []}
