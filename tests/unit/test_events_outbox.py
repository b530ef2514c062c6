"""The SQLite outbox: order, acknowledgement, the size bound, state and reopening; and the JSON Schema
files are current."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alpr_events import jsonschema
from alpr_events.outbox import AsyncOutbox, Outbox, OutboxError, Record


def rec(i: int, size: int = 100) -> Record:
    return Record(topic="t", key=b"cam", value=bytes([i % 256]) * size, record_id=f"e{i}:1", created_ns=i)


def test_rows_come_back_in_order_and_leave_only_when_deleted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=1 << 20)
    try:
        box.write([rec(i) for i in range(10)])
        rows = box.peek(4)
        assert [r.record_id for r in rows] == ["e0:1", "e1:1", "e2:1", "e3:1"]
        box.mark_attempted([r.seq for r in rows[:2]])
        box.delete([r.seq for r in rows])
        rest = box.peek(100)
        assert [r.record_id for r in rest] == [f"e{i}:1" for i in range(4, 10)]
        assert box.count == 6 and box.bytes == 600
        box.delete([rows[0].seq])  # already gone: harmless
        assert box.count == 6
    finally:
        box.close()


def test_reopen_keeps_rows_attempts_and_states(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, max_bytes=1 << 20)
    box.write([rec(1), rec(2)], states=[("e1", 10, b"state-1")])
    box.mark_attempted([box.peek(1)[0].seq])
    box.close()
    again = Outbox(path, max_bytes=1 << 20)
    try:
        rows = again.peek(10)
        assert [(r.record_id, r.attempts) for r in rows] == [("e1:1", 1), ("e2:1", 0)]
        assert (again.count, again.bytes) == (2, 200)
        assert again.load_states() == [b"state-1"]
        probe = sqlite3.connect(path)
        try:
            assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            probe.close()
    finally:
        again.close()


def test_state_upserts_and_forgets_in_the_same_transaction(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=1 << 20)
    try:
        box.write([], states=[("e1", 1, b"a"), ("e2", 2, b"b")])
        box.write([], states=[("e1", 3, b"a2")], forget=["e2"])
        assert box.load_states() == [b"a2"]
        assert box.forget_older_than(4) == 1
        assert box.load_states() == []
    finally:
        box.close()


def test_size_bound_drops_the_oldest_and_reports_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=1000)
    try:
        assert box.write([rec(i) for i in range(8)]).dropped == 0
        result = box.write([rec(i) for i in range(8, 12)])
        assert result.dropped == 2 and result.dropped_bytes == 200
        assert box.bytes <= 1000 and box.count == 10
        assert box.peek(1)[0].record_id == "e2:1"
    finally:
        box.close()


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match="cannot open the events outbox"):
        Outbox(blocker / "o.sqlite3", max_bytes=1 << 20)


async def test_async_outbox_signals_rows_and_emptiness(tmp_path: Path) -> None:
    box = await AsyncOutbox.open(tmp_path / "o.sqlite3", max_bytes=1 << 20, synchronous="normal")
    try:
        assert box.empty.is_set() and not box.has_rows.is_set()
        await box.write([rec(1)])
        assert box.has_rows.is_set() and not box.empty.is_set()
        rows = await box.peek(10)
        await box.delete([r.seq for r in rows])
        assert box.empty.is_set()
        assert await box.peek(10) == [] and not box.has_rows.is_set()
    finally:
        await box.close()


def test_committed_json_schemas_are_current() -> None:
    stale = jsonschema.stale(jsonschema.default_dir())
    assert not stale, f"run `python -m alpr_events.jsonschema --write`: stale {stale}"


def test_json_schema_check_command_detects_a_stale_file(tmp_path: Path) -> None:
    assert jsonschema.main(["--write", "--dir", str(tmp_path)]) == 0
    assert jsonschema.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "plate_event.schema.json").write_text("{}")
    assert jsonschema.main(["--check", "--dir", str(tmp_path)]) == 1
