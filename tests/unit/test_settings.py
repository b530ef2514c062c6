"""Configuration: YAML plus ALPR_* environment overrides, and errors that name the bad key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alpr_shared.settings import AlprSettings, ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALPR_"):
            monkeypatch.delenv(key)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alpr.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.cameras == []
    assert settings.kafka.acks == "all" and settings.kafka.enable_idempotence
    assert settings.services.detect.metrics_port == 9102
    assert settings.endpoint("frames") == "ipc:///tmp/alpr/frames.sock"


def test_yaml_file_is_loaded(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
runtime_dir: /run/alpr
cameras:
  - id: gate-1
    source: rtsp://user:pw@10.0.0.9/stream
    target_fps: 10
    roi: {x: 0, y: 100, width: 1920, height: 800}
    regions: [us]
frame_store: {slots_per_camera: 8}
services:
  ingest: {metrics_port: 9201}
""",
    )
    settings = load_settings(path)
    assert settings.cameras[0].id == "gate-1"
    assert settings.cameras[0].roi is not None and settings.cameras[0].roi.y == 100
    assert settings.frame_store.slots_per_camera == 8
    assert settings.services.ingest.metrics_port == 9201
    assert settings.services.detect.metrics_port == 9102  # untouched sections keep their defaults
    assert settings.endpoint("detections") == "ipc:///run/alpr/detections.sock"


def test_environment_overrides_the_file_and_overrides_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "kafka:\n  bootstrap: file:9092\n  topic: from-file\n")
    monkeypatch.setenv("ALPR_KAFKA__BOOTSTRAP", "env:9092")
    monkeypatch.setenv("ALPR_SERVICES__QUERY__METRICS_PORT", "9999")
    settings = load_settings(path)
    assert settings.kafka.bootstrap == "env:9092"
    assert settings.kafka.topic == "from-file"
    assert settings.services.query.metrics_port == 9999
    settings = load_settings(path, overrides={"kafka": {"bootstrap": "cli:1"}})
    assert settings.kafka.bootstrap == "cli:1"
    assert settings.kafka.topic == "from-file"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "environment: production\n")
    monkeypatch.setenv("ALPR_CONFIG", str(path))
    assert load_settings().environment == "production"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  - id: a\n    source: x.mp4\n    target_fps: -1\n",
            "cameras.0.target_fps: Input should be greater than 0 (got -1)",
        ),
        ("cameras:\n  - id: a\n    source: x.mp4\n    tagret_fps: 5\n", "cameras.0.tagret_fps: unknown key"),
        ("cameras:\n  - id: 'bad id'\n    source: x.mp4\n", "cameras.0.id:"),
        ("cameras:\n  - id: a\n", "cameras.0.source: Field required"),
        ("kafka:\n  acks: 2\n", "kafka.acks:"),
        (
            "frame_store:\n  slots_per_camera: 1\n",
            "frame_store.slots_per_camera: Input should be greater than or equal to 2",
        ),
        (
            "database:\n  pool_min: 5\n  pool_max: 2\n",
            "database: Value error, pool_min (5) must not exceed pool_max (2)",
        ),
        ("services:\n  detect:\n    metrics_port: 70000\n", "services.detect.metrics_port:"),
        ("camras: []\n", "camras: unknown key"),
        ("cameras:\n  - {id: a, source: x.mp4}\n  - {id: a, source: y.mp4}\n", "camera id 'a' is used twice"),
    ],
)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message


def test_every_bad_key_is_listed_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "camras: []\nkafka:\n  acks: 7\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "camras: unknown key" in message
    assert "kafka.acks" in message


def test_bad_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPR_FRAME_STORE__SLOTS_PER_CAMERA", "many")
    with pytest.raises(ConfigError, match=r"frame_store\.slots_per_camera"):
        load_settings()


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "cameras: [\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(_write(tmp_path, "- just\n- a list\n"))
    assert load_settings(_write(tmp_path, "")) == AlprSettings()


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka.bootstrap = "x"


def test_partial_service_section_keeps_its_default_port(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "services:\n  detect: {shutdown_timeout_s: 3}\n"))
    assert settings.services.detect.metrics_port == 9102
    assert settings.services.detect.shutdown_timeout_s == 3


def test_idempotent_producer_requires_acks_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enable_idempotence requires acks 'all'"):
        load_settings(_write(tmp_path, "kafka: {acks: '1'}\n"))
    settings = load_settings(_write(tmp_path, "kafka: {acks: '1', enable_idempotence: false}\n"))
    assert settings.kafka.acks == "1"
