"""`events.watchlist_source`: the older `watchlist_from_kafka` still loads, a contradiction is a clear error,
`alpr run` polls the database without a broker and follows the topic with one, and the events service
builds the follower that the setting names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from alpr_events.kafka import WatchlistFollower
from alpr_events.service import _watchlist_follower
from alpr_events.watchlist import Watchlist
from alpr_events.watchlist_db import WatchlistPoller
from alpr_query.watchlist.publisher import record
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.run import plan
from alpr_shared.run.plan import Layout, RunOptions
from alpr_shared.schemas import Codec, WatchlistEntry
from alpr_shared.schemas import watchlist_entry_from_row as entry_from_row
from alpr_shared.settings import AlprSettings, ConfigError, load_settings


def _load(tmp_path: Path, events: dict[str, Any]) -> AlprSettings:
    path = tmp_path / "alpr.yaml"
    path.write_text(yaml.safe_dump({"events": events}))
    return load_settings(path)


def test_the_default_follows_the_topic(tmp_path: Path) -> None:
    events = _load(tmp_path, {}).events
    assert events.watchlist_source == "kafka" and events.watchlist_poll_s == 2.0


def test_the_older_flag_still_loads(tmp_path: Path) -> None:
    assert _load(tmp_path, {"watchlist_from_kafka": False}).events.watchlist_source == "none"
    assert _load(tmp_path, {"watchlist_from_kafka": True}).events.watchlist_source == "kafka"
    both = _load(tmp_path, {"watchlist_from_kafka": False, "watchlist_source": "none"})
    assert both.events.watchlist_source == "none"


def test_the_older_flag_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPR_EVENTS__WATCHLIST_FROM_KAFKA", "false")
    assert _load(tmp_path, {}).events.watchlist_source == "none"


def test_a_contradiction_and_a_bad_value_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"watchlist_from_kafka \(false\) contradicts watchlist_source"):
        _load(tmp_path, {"watchlist_from_kafka": False, "watchlist_source": "database"})
    with pytest.raises(ConfigError, match="watchlist_source"):
        _load(tmp_path, {"watchlist_source": "redis"})
    with pytest.raises(ConfigError, match="watchlist_poll_s"):
        _load(tmp_path, {"watchlist_source": "database", "watchlist_poll_s": 0})


def _run_config(tmp_path: Path, options: RunOptions, base: dict[str, Any] | None = None) -> AlprSettings:
    video = tmp_path / "gate.mp4"
    video.write_bytes(b"")
    layout = Layout(tmp_path / "data", tmp_path / "rt")
    config = plan.build_config(
        options,
        layout,
        base=base or {},
        cameras=plan.cameras_from_sources([str(video)], realtime=True, taken=set()),
        database_url="postgresql://postgres@/alpr?host=/tmp/x",
        ports=plan.allocate_ports(options),
        namespace="run42",
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path)


def test_alpr_run_polls_the_database_without_a_broker_and_the_topic_with_one(tmp_path: Path) -> None:
    embedded = _run_config(tmp_path, RunOptions())
    assert embedded.events.watchlist_source == "database"
    assert embedded.database.url == "postgresql://postgres@/alpr?host=/tmp/x"
    assert not embedded.query.watchlist_publish
    # The older flag in the user's file does not contradict the run's choice.
    legacy = _run_config(tmp_path, RunOptions(), {"events": {"watchlist_from_kafka": False}})
    assert legacy.events.watchlist_source == "database"
    # A user who turned runtime changes off keeps them off.
    off = _run_config(tmp_path, RunOptions(), {"events": {"watchlist_source": "none"}})
    assert off.events.watchlist_source == "none"
    with_kafka = _run_config(tmp_path, RunOptions(kafka="broker:9092"))
    assert with_kafka.events.watchlist_source == "kafka" and with_kafka.events.delivery == "kafka"
    assert with_kafka.query.watchlist_publish


def _settings(**events: Any) -> AlprSettings:
    return AlprSettings.model_validate({"events": events})


def test_the_service_builds_the_follower_the_setting_names() -> None:
    def follower(settings: AlprSettings, *, local: bool) -> object:
        return _watchlist_follower(settings, Watchlist(), ServiceMetrics("events"), lambda: None, local=local)

    assert isinstance(follower(_settings(), local=False), WatchlistFollower)
    # Production behaviour unchanged: the topic is not followed without a broker.
    assert follower(_settings(), local=True) is None
    poller = follower(_settings(watchlist_source="database", watchlist_poll_s=0.5), local=True)
    assert isinstance(poller, WatchlistPoller) and poller.poll_s == 0.5
    assert poller.url == AlprSettings().database.url
    assert follower(_settings(watchlist_source="none"), local=False) is None


def test_a_row_maps_like_the_publishers_record() -> None:
    """The poller sees what the topic would carry: the query publisher's record of the same row."""
    row = {
        "entry_id": "e1",
        "plate": "ABC123",
        "label": "stolen",
        "match": "fuzzy",
        "max_distance": 2,
        "note": "not on the wire",
        "updated_at": datetime(2026, 1, 1, 0, 0, 1, 5, tzinfo=UTC),
        "deleted_at": None,
    }
    _, value = record(row)
    assert value is not None
    assert entry_from_row(row) == Codec(WatchlistEntry, wire="json").decode(value)
    assert entry_from_row(row) == WatchlistEntry(
        entry_id="e1",
        plate="ABC123",
        label="stolen",
        match="fuzzy",
        max_distance=2,
        updated_at_ns=1_767_225_601_000_005_000,
    )
    deleted = {**row, "deleted_at": row["updated_at"]}
    assert record(deleted)[1] is None and entry_from_row(deleted) is None
