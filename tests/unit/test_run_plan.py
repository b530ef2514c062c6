"""`alpr run`'s plan: camera ids, the generated configuration (valid for every child), modes, start and stop
order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from alpr_shared.run import plan
from alpr_shared.run.plan import Layout, RunError, RunOptions
from alpr_shared.settings import load_settings


def test_camera_ids_are_readable_and_unique() -> None:
    taken: set[str] = set()
    assert plan.camera_id("/videos/gate 1.mp4", taken) == "gate-1"
    assert plan.camera_id("/other/gate 1.mp4", taken) == "gate-1-2"
    assert plan.camera_id("rtsp://user:pw@10.0.0.5:554/stream", taken) == "10-0-0-5"
    assert plan.camera_id("/videos/___.mp4", taken) == "cam"


def test_sources_split_into_cameras_and_config_files(tmp_path: Path) -> None:
    cams, configs = plan.split_sources(["a.mp4", "site.yaml", "rtsp://h/x.yaml", "b.YML"])
    assert cams == ["a.mp4", "rtsp://h/x.yaml"]
    assert configs == [Path("site.yaml"), Path("b.YML")]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        plan.cameras_from_sources([str(tmp_path / "nope.mp4")], realtime=True, taken=set())


def test_data_dir_precedence(tmp_path: Path) -> None:
    assert plan.data_dir(RunOptions(data_dir=tmp_path / "x"), {}) == tmp_path / "x"
    assert plan.data_dir(RunOptions(), {plan.DATA_HOME_ENV: str(tmp_path / "env")}) == tmp_path / "env"
    assert plan.data_dir(RunOptions(), {}) == (Path.cwd() / "alpr-data").resolve()


def _config(tmp_path: Path, options: RunOptions, base: dict[str, Any] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    video = tmp_path / "gate.mp4"
    video.write_bytes(b"")
    layout = Layout(tmp_path / "data", tmp_path / "rt")
    cameras = plan.cameras_from_sources([str(video)], realtime=options.realtime, taken=set())
    config = plan.build_config(
        options,
        layout,
        base=base or {},
        cameras=cameras,
        database_url="postgresql://postgres@/alpr?host=/tmp/x",
        ports=plan.allocate_ports(options),
        namespace="run42",
        frame_size=(1280, 720),
    )
    layout.data.mkdir()
    layout.config.write_text(yaml.safe_dump(config))
    return layout.config


def test_embedded_config_is_valid_and_uses_the_outbox_without_a_broker(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, RunOptions(ocr_workers=2)))
    assert settings.events.delivery == "local" and not settings.events.watchlist_from_kafka
    assert settings.persist.source == "outbox"
    assert (
        settings.persist.outbox_path
        == settings.events.outbox_path
        == tmp_path / "data" / "events-outbox.sqlite3"
    )
    assert settings.endpoint("frames") == f"ipc://{tmp_path / 'rt'}/frames.sock"
    assert settings.frame_store.namespace == "run42"
    assert (settings.frame_store.max_width, settings.frame_store.max_height) == (1280, 720)
    assert [c.id for c in settings.cameras] == ["gate"] and settings.cameras[0].realtime
    assert settings.log.format == "json"


def test_kafka_mode_keeps_production_delivery_and_the_users_settings(tmp_path: Path) -> None:
    base = {"events": {"dedup_window_s": 60}, "cameras": [{"id": "yard", "source": "rtsp://h/s"}]}
    options = RunOptions(kafka="broker:9092", database_url="postgresql://db/alpr")
    settings = load_settings(_config(tmp_path, options, base))
    assert settings.events.delivery == "kafka" and settings.persist.source == "kafka"
    assert settings.kafka.bootstrap == "broker:9092"
    assert settings.events.dedup_window_s == 60
    assert [c.id for c in settings.cameras] == ["yard", "gate"]


def _specs(tmp_path: Path) -> list[plan.ProcessSpec]:
    options = RunOptions(ocr_workers=2, view=True, save_video=tmp_path / "out.mp4")
    return plan.process_specs(
        options,
        Layout(tmp_path, tmp_path / "rt"),
        ports=plan.allocate_ports(options),
        postgres=["postgres", "-D", "x"],
        postgres_user="pgserver",
        query_available=True,
        view_available=True,
    )


def test_start_order_is_downstream_first_and_ingest_last(tmp_path: Path) -> None:
    names = [s.name for s in _specs(tmp_path)]
    assert names == [
        "postgres",
        "query",
        "events",
        "persist",
        "ocr-worker-1",
        "ocr-worker-2",
        "ocr",
        "track",
        "detect",
        "view",
        "ingest",
    ]
    specs = {s.name: s for s in _specs(tmp_path)}
    assert specs["postgres"].user == "pgserver" and specs["postgres"].metrics_port is None
    assert specs["ocr-worker-1"].metrics_port != specs["ocr-worker-2"].metrics_port
    assert "--save-video" in specs["view"].argv
    assert specs["detect"].argv[-2:] == ["--metrics-port", str(specs["detect"].metrics_port)]


def test_stop_order_is_sources_first_database_last(tmp_path: Path) -> None:
    groups = [[s.name for s in g] for g in plan.stop_order(_specs(tmp_path))]
    assert groups == [
        ["ingest"],
        ["view"],
        ["detect"],
        ["track"],
        ["ocr"],
        ["ocr-worker-1", "ocr-worker-2"],
        ["events"],
        ["persist"],
        ["query"],
        ["postgres"],
    ]


def test_api_port_precedence(tmp_path: Path) -> None:
    assert load_settings(_config(tmp_path / "a", RunOptions(api_port=9999))).query.port == 9999
    user = {"query": {"port": 7777}}
    assert load_settings(_config(tmp_path / "b", RunOptions(), user)).query.port == 7777
    port = load_settings(_config(tmp_path / "c", RunOptions())).query.port
    assert port == plan.DEFAULT_API_PORT or port > 1024
    assert not load_settings(_config(tmp_path / "d", RunOptions())).query.watchlist_publish  # no broker
