"""Events and Kafka security settings: validation with clear errors, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from alpr_events.kafka import describe
from alpr_shared.kafka import connection_options
from alpr_shared.settings import ConfigError, KafkaSettings, load_settings


def test_sasl_needs_credentials_and_credentials_need_sasl(tmp_path: Path) -> None:
    path = tmp_path / "alpr.yaml"
    path.write_text("kafka: {security_protocol: SASL_SSL}\n")
    with pytest.raises(ConfigError, match="needs sasl_username and sasl_password"):
        load_settings(path)
    path.write_text("kafka: {sasl_username: u, sasl_password: p}\n")
    with pytest.raises(ConfigError, match="security_protocol does not use SASL"):
        load_settings(path)


def test_password_is_used_but_never_shown() -> None:
    kafka = KafkaSettings(
        bootstrap="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="edge-1",
        sasl_password=SecretStr("hunter2"),
    )
    options = connection_options(kafka)
    assert options["sasl_plain_password"] == "hunter2"  # noqa: S105 - a test value
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and "ssl_context" in options
    assert "hunter2" not in repr(kafka)
    assert "hunter2" not in str(kafka.model_dump(mode="json"))
    assert "hunter2" not in str(describe(kafka))


def test_events_section_defaults_and_bad_values(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.events.dedup_window_s == 300 and settings.events.dedup_scope == "camera"
    path = tmp_path / "alpr.yaml"
    path.write_text("events: {dedup_scope: planet, watchlist: [{id: w1, plate: AB1, match: sorta}]}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "events.dedup_scope" in str(info.value) and "events.watchlist.0.match" in str(info.value)
