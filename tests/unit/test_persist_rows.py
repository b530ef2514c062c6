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
from alpr_persist.rows import (
    STAGE_COLUMNS,
    TABLE_COLUMNS,
    InvalidEvent,
    decode_time,
    encode_time,
    event_day,
    event_row,
    image_rows,
    ns_to_datetime,
    pg_time,
    table_row,
    validate,
)
from alpr_persist.store import (
    PoisonBatchError,
    RetriableError,
    SchemaProblem,
    camera_params,
    classify,
    rollup_params,
    upsert_sql,
)
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


@given(st.integers(min_value=946_684_800 * 10**9, max_value=7_258_118_400 * 10**9))
def test_times_for_the_direct_copy_encode_and_decode_exactly(ns: int) -> None:
    # The COPY of first revisions sends (microseconds since 2000,) tuples; datetimes from other code on
    # the same pool take the same encoding, and decoding gives the aware UTC datetime back.
    assert encode_time(pg_time(ns)) == pg_time(ns)
    assert encode_time(ns_to_datetime(ns)) == pg_time(ns)
    assert encode_time(ns_to_datetime(ns).replace(tzinfo=None)) == pg_time(ns)  # naive counts as UTC
    assert decode_time(pg_time(ns)) == ns_to_datetime(ns)
    assert event_day(make_event(0, now_ns=ns, spread_s=0)) == ns_to_datetime(ns).date()


def test_a_table_row_holds_what_the_upsert_would_store() -> None:
    event = make_event(2, jpeg_bytes=8, now_ns=NOW)
    staged = dict(zip(STAGE_COLUMNS, event_row(event, keep_images=True), strict=True))
    row = dict(zip(TABLE_COLUMNS, table_row(event, keep_images=True), strict=True))
    for ns_column, column in (("first_seen_ns", "first_seen"), ("best_shot_ns", "best_shot_at")):
        ns = staged.pop(ns_column)
        assert isinstance(ns, int)
        assert decode_time(row.pop(column)) == ns_to_datetime(ns)  # type: ignore[arg-type] # a pg_time tuple
    assert row.pop("has_plate_image") is True and row.pop("has_vehicle_image") is False
    assert table_row(event, keep_images=False)[TABLE_COLUMNS.index("has_plate_image")] is False
    for column, value in row.items():
        if column in ("last_seen", "emitted_at"):
            continue
        assert staged[column] == value, column
    assert [r[2] for r in image_rows(event)] == ["plate"]


def test_camera_and_rollup_parameters_group_the_batch() -> None:
    hour = 3_600 * 10**9
    base = (NOW // hour) * hour
    events = [
        msgspec.structs.replace(make_event(i, now_ns=NOW), first_seen_ns=base + i * 10**9, confidence=0.1)
        for i in range(8)
    ]
    events.append(
        msgspec.structs.replace(events[0], event_id="later", first_seen_ns=base + hour, watchlist=["x"])
    )
    cams = camera_params(events)
    assert len(cams) == 8 and sorted(cams[0]) == ["cam-0", "cam-1", "cam-2", "cam-3"]
    by_camera = {c: (oldest, newest) for c, oldest, newest in zip(cams[0], cams[6], cams[7], strict=True)}
    assert by_camera["cam-0"] == (base, base + hour)
    roll = rollup_params(events)
    groups = {(h, c): (n, valid, hits, conf) for h, c, n, valid, hits, conf in zip(*roll, strict=True)}
    assert groups[(base // hour, "cam-0")][0] == 2 and groups[(base // hour + 1, "cam-0")][:1] == (1,)
    assert groups[(base // hour + 1, "cam-0")][2] == 1
    # Confidences are summed as real (what plate_events stores), not as the double on the wire.
    assert groups[(base // hour, "cam-1")][3] == pytest.approx(2 * 0.10000000149011612, abs=0)


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
