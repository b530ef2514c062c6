"""Persist's pure logic: validation, row conversion, decoding into dead letters, error sorting, migration
files (including a syntax check of the TimescaleDB SQL, which no server here can run)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import msgspec
import pglast
import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from alpr_persist import migrate
from alpr_persist.consumer import Backoff, Item, Stopped, _sleep_unless, decode_items
from alpr_persist.rows import STAGE_COLUMNS, InvalidEvent, event_row, ns_to_datetime, validate
from alpr_persist.store import PoisonBatchError, RetriableError, SchemaProblem, classify, upsert_sql
from alpr_persist.synthetic import make_event
from alpr_shared.schemas import Codec, PlateEvent
from alpr_shared.settings import AlprSettings, PersistSettings

NOW = time.time_ns()
DAY = 86_400 * 10**9
CODEC: Codec[PlateEvent] = Codec(PlateEvent, wire="json")


def check(event: PlateEvent) -> None:
    validate(event, now_ns=NOW, max_future_ns=DAY)


def test_a_synthetic_event_is_valid_and_converts_to_a_row_in_column_order() -> None:
    event = make_event(1, jpeg_bytes=8, now_ns=NOW)
    check(event)
    row = event_row(event, keep_images=True)
    assert len(row) == len(STAGE_COLUMNS)
    values = dict(zip(STAGE_COLUMNS, row, strict=True))
    assert values["event_id"] == event.event_id
    assert values["first_seen_ns"] == event.first_seen_ns
    assert values["plate_box"] == [100.0, 200.0, 220.0, 240.0]
    assert values["plate_jpeg"] == event.plate_jpeg
    assert dict(zip(STAGE_COLUMNS, event_row(event, keep_images=False), strict=True))["plate_jpeg"] is None


@given(st.integers(min_value=946_684_800 * 10**9, max_value=7_258_118_400 * 10**9))
def test_nanoseconds_convert_exactly_to_the_microsecond(ns: int) -> None:
    dt = ns_to_datetime(ns)
    assert dt.tzinfo is UTC
    micros = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // (datetime.resolution)
    assert micros == ns // 1000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": ""}, "event_id is empty"),
        ({"camera_id": ""}, "camera_id is empty"),
        ({"plate": "AB\x00"}, "NUL"),
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"revision": -1}, "revision"),
        ({"first_seen_ns": 5, "last_seen_ns": 6}, "between 2000 and 2200"),
        ({"last_seen_ns": 1_600_000_000 * 10**9}, "last_seen_ns"),
        ({"first_seen_ns": NOW + 3 * DAY, "last_seen_ns": NOW + 3 * DAY}, "future"),
        ({"latitude": 91.0}, "latitude"),
        ({"event_id": "x" * 500}, "at most"),
        ({"watchlist": ["ok", "bad\x00"]}, "NUL"),
    ],
)
def test_invalid_events_are_rejected_with_the_field_named(change: dict[str, object], reason: str) -> None:
    event = msgspec.structs.replace(make_event(2, now_ns=NOW), **change)
    with pytest.raises(InvalidEvent, match=reason):
        check(event)


def test_decode_sorts_records_into_events_and_dead_letters() -> None:
    tp = TopicPartition("t", 0)
    good = make_event(3, now_ns=NOW)
    items = [
        Item(tp, 0, b"k", CODEC.encode(good)),
        Item(tp, 1, b"k", b"\x00garbage"),
        Item(tp, 2, b"k", CODEC.encode(good).replace(b'"schema_version":1', b'"schema_version":2')),
        Item(tp, 3, b"k", CODEC.encode(msgspec.structs.replace(good, confidence=-0.1))),
        Item(tp, 4, b"k", None),
    ]
    ok, dead = decode_items(items, CODEC, now_ns=NOW)
    assert [i.offset for i in ok] == [0] and ok[0].event == good
    assert [(d.item.offset, d.kind) for d in dead] == [
        (1, "decode"),
        (2, "version"),
        (3, "invalid"),
        (4, "decode"),
    ]
    assert "schema_version 2" in dead[1].reason


def _pg_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("boom")


def test_database_errors_are_sorted_by_class() -> None:
    assert isinstance(classify(ConnectionRefusedError()), RetriableError)
    assert isinstance(classify(TimeoutError()), RetriableError)
    assert isinstance(classify(asyncpg.ConnectionDoesNotExistError("gone")), RetriableError)
    assert isinstance(classify(_pg_error(asyncpg.AdminShutdownError)), RetriableError)
    assert isinstance(classify(_pg_error(asyncpg.SerializationError)), RetriableError)
    assert isinstance(classify(_pg_error(asyncpg.CheckViolationError)), PoisonBatchError)
    assert isinstance(classify(_pg_error(asyncpg.InvalidTextRepresentationError)), PoisonBatchError)
    assert isinstance(classify(_pg_error(asyncpg.UndefinedTableError)), SchemaProblem)


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.2


def test_every_migration_version_has_a_file_for_each_layout() -> None:
    for layout in ("partitioned", "timescale"):
        plan = migrate.plan(layout)
        assert [m.version for m in plan] == list(range(1, len(plan) + 1))
        assert all(m.variant in (None, layout) for m in plan)


@pytest.mark.parametrize("layout", ["partitioned", "timescale"])
def test_migration_sql_parses_as_postgresql(layout: str) -> None:
    # The TimescaleDB file is checked for syntax only: no TimescaleDB server runs on these machines.
    for migration in migrate.plan(layout):  # type: ignore[arg-type]
        assert pglast.parse_sql(migration.sql), migration.label


@pytest.mark.parametrize("rollup", [True, False])
def test_upsert_statement_parses(rollup: bool) -> None:
    assert len(pglast.parse_sql(upsert_sql(rollup=rollup))) == 1


def test_both_layouts_create_the_same_event_columns() -> None:
    def columns(sql: str) -> list[str]:
        body = sql.split("CREATE TABLE plate_events (", 1)[1].split("PRIMARY KEY", 1)[0]
        return [
            line.split()[0]
            for line in body.strip().splitlines()
            if line.strip() and not line.strip().startswith("--")
        ]

    plans = {layout: {m.version: m for m in migrate.plan(layout)} for layout in ("partitioned", "timescale")}
    assert columns(plans["partitioned"][2].sql) == columns(plans["timescale"][2].sql)


def test_persist_settings_defaults_and_bounds() -> None:
    settings = AlprSettings()
    assert settings.persist.dlq_topic == "alpr.plates.dlq"
    assert settings.persist.group_id == "alpr-persist"
    with pytest.raises(ValueError, match="retry_initial_s"):
        PersistSettings(retry_initial_s=10, retry_max_s=1)
    with pytest.raises(ValueError, match="batch_size"):
        PersistSettings(batch_size=0)


async def test_a_backoff_sleep_ends_at_once_when_the_service_stops() -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    started = time.monotonic()
    with pytest.raises(Stopped):
        await _sleep_unless(stopping, 30.0)
    assert time.monotonic() - started < 5.0
    await _sleep_unless(asyncio.Event(), 0.01)  # no stop: returns after the delay
